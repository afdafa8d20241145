"""A real kube-apiserver with a real etcd on loopback, for tests and `make kube-up`.

Binaries come from scripts/kube-tools (built from the Go module proxy into
~/.cache/kubepd). Every port is a free loopback port; every process is started in its
own process group and reaped on stop, and an atexit hook reaps them if a test run dies.

    python -m tests.support.kubecluster up --dir .kube-local     # starts, then detaches
    python -m tests.support.kubecluster down --dir .kube-local
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.ports import free_port

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.33.5")
BIN = Path(
    os.environ.get("KUBEPD_K8S_BIN", Path.home() / ".cache" / "kubepd" / f"k8s-{K8S_VERSION}")
)
_LIVE: list[subprocess.Popen[bytes]] = []


def _reap_all() -> None:
    for p in _LIVE:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


atexit.register(_reap_all)


def stop_process(p: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group of a child started with start_new_session, SIGKILL
    after `grace_s`; reaped either way."""
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(grace_s)
    except ProcessLookupError:
        p.wait()
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def binary(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: run scripts/kube-tools (builds it from the Go module proxy)"
        )
    return path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, extra_sans: tuple[str, ...] = ()) -> str:
    """CA (with key usage, so strict verification passes), serving cert, SA keys, token.
    `extra_sans`: more subjectAltName entries of the serving cert (e.g. "IP:10.88.0.1")."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=kubepd-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName="
        + ",".join(
            [
                "IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default",
                "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
                *extra_sans,
            ]
        )
        + "\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "ext.cnf",
        "-out",
        "apiserver.crt",
        cwd=d,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    token = secrets.token_hex(16)
    (d / "tokens.csv").write_text(f'{token},kubepd-admin,kubepd-admin,"system:masters"\n')
    return token


class KubeCluster:
    def __init__(self, workdir: Path, with_controller_manager: bool = False) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = self.dir / "pki"
        self.with_kcm = with_controller_manager
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.token = ""
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.kcm: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        _LIVE.append(p)
        return p

    def start(self, timeout: float = 90.0) -> KubeCluster:
        if not (self.pki / "tokens.csv").exists():
            self.token = make_pki(self.pki)
        else:
            self.token = (self.pki / "tokens.csv").read_text().split(",", 1)[0]
        self.start_etcd()
        self.start_apiserver(timeout)
        self.write_kubeconfig()
        if self.with_kcm:
            self.start_controller_manager()
        return self

    def start_etcd(self) -> None:
        self.etcd = self._spawn(
            "etcd",
            [
                str(binary("etcd")),
                "--name",
                "test",
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster",
                f"test=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._wait(
            lambda: self._http_ok(f"http://127.0.0.1:{self.etcd_port}/health"),
            30,
            "etcd",
            self.etcd,
        )

    def start_apiserver(self, timeout: float = 90.0) -> None:
        p = self.pki
        self.apiserver = self._spawn(
            "apiserver",
            [
                str(binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--token-auth-file={p / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer=https://127.0.0.1:{self.port}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--watch-cache=true",
            ],
        )
        self._wait(self.ready, timeout, "kube-apiserver", self.apiserver)

    def start_controller_manager(self) -> None:
        self.kcm = self._spawn(
            "controller-manager",
            [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                "--controllers=namespace,garbagecollector,statefulset,replicaset,deployment,serviceaccount,"
                "serviceaccount-token,disruption,pvc-protection",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--root-ca-file={self.ca_file}",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )

    def ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(
            self.server + "/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                return r.status == 200
        except OSError:
            return False

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _wait(
        self, check: object, timeout: float, what: str, proc: subprocess.Popen[bytes] | None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited: see {self.dir}/{what.split('-')[-1]}.log")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout} s (logs in {self.dir})")

    def write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "admin", "namespace": "default"},
                }
            ],
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))

    @staticmethod
    def _stop(p: subprocess.Popen[bytes] | None) -> None:
        stop_process(p)

    def restart_apiserver(self, down_s: float = 0.0) -> None:
        self._stop(self.apiserver)
        time.sleep(down_s)
        self.start_apiserver()

    def restart_etcd(self, down_s: float = 0.0) -> None:
        self._stop(self.etcd)
        time.sleep(down_s)
        self.start_etcd()
        self._wait(self.ready, 60, "kube-apiserver", self.apiserver)

    def stop(self) -> None:
        for p in (self.kcm, self.apiserver, self.etcd):
            self._stop(p)

    def pids(self) -> list[int]:
        return [p.pid for p in (self.etcd, self.apiserver, self.kcm) if p is not None]


def main() -> int:
    ap = argparse.ArgumentParser(description="a local kube-apiserver + etcd for development")
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--dir", default=".kube-local", help="working directory (kubeconfig goes here)")
    ap.add_argument(
        "--controller-manager", action="store_true", help="also run kube-controller-manager"
    )
    args = ap.parse_args()
    d = Path(args.dir).resolve()
    pidfile = d / "pids"
    if args.action == "down":
        if pidfile.exists():
            for pid in map(int, pidfile.read_text().split()):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            pidfile.unlink()
        print(f"stopped the cluster in {d}")
        return 0
    cluster = KubeCluster(d, with_controller_manager=args.controller_manager).start()
    pidfile.write_text(" ".join(map(str, cluster.pids())))
    _LIVE.clear()  # detach: `down` stops them
    print(f"kube-apiserver at {cluster.server}; KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
