"""A real one-node Kubernetes cluster on this machine, for the node suite and `make node-up`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, CoreDNS,
containerd and kubelet all run inside a network namespace this module creates
(`kubepd-node`). Pods get addresses on a bridge in that namespace (CNI bridge plugin,
host-local IPAM, 10.88.0.0/24); the namespace has no default route, so pod traffic
cannot leave the machine. A veth pair gives the host (the tests, kubectl, helm) a route
to 10.88.0.0/24 and nothing else. CoreDNS runs as a process next to kubelet, answering
for cluster.local on the bridge's address, which is every pod's nameserver.

Needs: root, cgroups (v1 with the cpu, memory, pids controllers, or v2), `ip`, `nsenter`,
containerd + runc + CNI plugins (Debian packages, installed by scripts/node-deps), the
binaries of scripts/kube-tools and scripts/node-tools, and the images of
scripts/build-image. Only one node runs at a time (a lock file says whose it is).

    python -m tests.support.node up --dir .node-local     # starts, then detaches
    python -m tests.support.node down --dir .node-local
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.kubecluster import K8S_VERSION, make_pki, stop_process
from tests.support.kubecluster import binary as control_binary

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KUBEPD_CACHE", Path.home() / ".cache" / "kubepd"))
NODE_BIN = CACHE / f"node-{K8S_VERSION}"
NETNS = "kubepd-node"
BRIDGE = "kpd0"
POD_SUBNET = "10.88.0.0/24"
GATEWAY = "10.88.0.1"  # the bridge's address in the namespace: API server, DNS, kubelet
HOST_VETH, NODE_VETH = "kpd-host", "kpd-node"
HOST_LINK, NODE_LINK = "10.89.0.1", "10.89.0.2"  # the veth pair (/30)
SERVICE_CIDR = "10.0.0.0/24"  # kubernetes.default = 10.0.0.1
NODE_NAME = "kubepd-node"
PAUSE_IMAGE = "localhost/kubepd-pause:v1"
CNI_BIN = Path("/usr/lib/cni")
LOCK = Path("/run/kubepd-node.lock")
STATE = "node-state.json"
HOSTPATH_PV_DIR = "/tmp/hostpath_pv/"  # where kube-controller-manager's provisioner puts them


class NodeUnavailable(Exception):
    """This machine cannot run a node (not root, no cgroups): the reason says why."""


def machine_check() -> None:
    """Raise NodeUnavailable unless this machine can run containers and a kubelet."""
    if os.geteuid() != 0:
        raise NodeUnavailable("needs root (kubelet, containerd and network namespaces)")
    cg = Path("/sys/fs/cgroup")
    v2 = (cg / "cgroup.controllers").exists()
    if not v2 and not all((cg / c).is_dir() for c in ("cpu", "memory", "pids")):
        raise NodeUnavailable("needs cgroups (v2, or v1 with the cpu, memory, pids controllers)")


def cgroup_version() -> int:
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


def node_binary(name: str) -> Path:
    path = NODE_BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run scripts/node-tools")
    return path


def system_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is missing: run scripts/node-deps (Debian packages)")
    return path


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def in_netns(*args: str) -> list[str]:
    """A command in the node's network namespace only (mounts stay shared: kubelet's
    volume mounts must be visible to containerd, which `ip netns exec` would hide)."""
    return ["nsenter", f"--net=/run/netns/{NETNS}", "--", *args]


class Node:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir.resolve()
        self.pki = self.dir / "pki"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token = ""
        self._lock: int | None = None

    # -- where things are ------------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://{GATEWAY}:6443"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def containerd_sock(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    def env(self) -> dict[str, str]:
        """Environment for kubectl / helm run by people or tests on the host."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.dir / "helm" / "data"),
        }

    # -- start -------------------------------------------------------------------------------
    def start(self, images: list[Path], timeout: float = 180.0) -> Node:
        machine_check()
        for name in ("containerd", "runc", "ctr", "nsenter", "ip", "iptables", "curl"):
            system_binary(name)
        if not (CNI_BIN / "bridge").exists():
            raise RuntimeError(f"{CNI_BIN}/bridge is missing: run scripts/node-deps")
        self._take_lock()
        t0 = time.monotonic()
        try:
            cleanup_leftovers()
            self.dir.mkdir(parents=True, exist_ok=True)
            self._network()
            self._pki()
            self._etcd()
            self._apiserver(timeout)
            self._write_kubeconfigs()
            self._controllers()
            self._containerd()
            for image in images:
                self.ctr("images", "import", str(image), timeout=300)
            self._dns()
            self._kubelet()
            self._wait(self._node_ready, timeout, "node Ready", "kubelet")
            self.kubectl("apply", "-f", "-", input=STORAGE_CLASS)
            self._save_state()
            self.started_in = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def _take_lock(self) -> None:
        """One node at a time: a live holder of the lock, or a detached node (`up`) whose
        state file is still there, makes a second start fail instead of breaking it."""
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        owner = os.read(fd, 4096).decode().strip()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another node is running ({owner}): stop it first") from None
        if owner.startswith("detached ") and (Path(owner.split(" ", 1)[1]) / STATE).exists():
            os.close(fd)
            raise RuntimeError(f"a node is up in {owner.split(' ', 1)[1]}: make node-down first")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {self.dir}\n".encode(), 0)
        self._lock = fd

    def detach(self) -> None:
        """Leave the node running (`up`): `down` with the same directory undoes it."""
        if self._lock is not None:
            os.ftruncate(self._lock, 0)
            os.pwrite(self._lock, f"detached {self.dir}\n".encode(), 0)
            os.close(self._lock)
            self._lock = None

    def _network(self) -> None:
        run("ip", "netns", "add", NETNS)
        ns = ["ip", "-n", NETNS]
        run(*ns, "link", "set", "lo", "up")
        run(*ns, "link", "add", BRIDGE, "type", "bridge")
        run(*ns, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run(*ns, "link", "set", BRIDGE, "up")
        run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH)
        run("ip", "link", "set", NODE_VETH, "netns", NETNS)
        run("ip", "addr", "add", f"{HOST_LINK}/30", "dev", HOST_VETH)
        run("ip", "link", "set", HOST_VETH, "up")
        run(*ns, "addr", "add", f"{NODE_LINK}/30", "dev", NODE_VETH)
        run(*ns, "link", "set", NODE_VETH, "up")
        # The host reaches pods and the API server; the namespace has no default route.
        run("ip", "route", "add", POD_SUBNET, "via", NODE_LINK)
        run(*in_netns("sysctl", "-qw", "net.ipv4.ip_forward=1"))

    def _pki(self) -> None:
        self.token = make_pki(self.pki, extra_sans=(f"IP:{GATEWAY}",))
        # The API server's client certificate towards kubelet (logs, exec).
        for args in (
            ["genrsa", "-out", "kubelet-client.key", "2048"],
            [
                "req",
                "-new",
                "-key",
                "kubelet-client.key",
                "-subj",
                "/O=system:masters/CN=kube-apiserver-kubelet-client",
                "-out",
                "kubelet-client.csr",
            ],
            [
                "x509",
                "-req",
                "-in",
                "kubelet-client.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-out",
                "kubelet-client.crt",
            ],
        ):
            subprocess.run(["openssl", *args], cwd=self.pki, check=True, capture_output=True)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen(in_netns(*args), stdout=log, stderr=log, start_new_session=True)
        self.procs[name] = p
        return p

    def _wait(self, check: Callable[[], bool], timeout: float, what: str, proc: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.procs.get(proc)
            if p is not None and p.poll() is not None:
                tail = (self.dir / f"{proc}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc} exited (waiting for {what}):\n{tail}")
            if check():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{what} not reached after {timeout} s (logs in {self.dir})")

    def _curl_ok(self, url: str, *extra: str) -> bool:
        r = run(*in_netns("curl", "-sf", "-m", "2", *extra, url), check=False)
        return r.returncode == 0

    def _etcd(self) -> None:
        self._spawn(
            "etcd",
            [
                str(control_binary("etcd")),
                "--name=node",
                f"--data-dir={self.dir / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=node=http://127.0.0.1:2380",
                "--listen-metrics-urls=http://127.0.0.1:2382",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(lambda: self._curl_ok("http://127.0.0.1:2379/health"), 30, "etcd", "etcd")

    def _apiserver(self, timeout: float) -> None:
        p = self.pki
        self._spawn(
            "apiserver",
            [
                str(control_binary("kube-apiserver")),
                "--etcd-servers=http://127.0.0.1:2379",
                "--bind-address=0.0.0.0",
                f"--advertise-address={GATEWAY}",
                "--secure-port=6443",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--kubelet-client-certificate={p / 'kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'kubelet-client.key'}",
                # The node's name resolves nowhere: logs and exec go to its address.
                "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={self.dir / 'certs'}",
                f"--token-auth-file={p / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=lease",
            ],
        )
        self._wait(
            lambda: self._curl_ok(
                f"{self.server}/readyz",
                "--cacert",
                str(p / "ca.crt"),
                "-H",
                f"Authorization: Bearer {self.token}",
            ),
            timeout,
            "kube-apiserver /readyz",
            "apiserver",
        )

    def _write_kubeconfigs(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "node",
            "clusters": [
                {
                    "name": "node",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "node",
                    "context": {"cluster": "node", "user": "admin", "namespace": "default"},
                }
            ],
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))

    def _controllers(self) -> None:
        kc = str(self.kubeconfig)
        self._spawn(
            "controller-manager",
            [
                str(control_binary("kube-controller-manager")),
                f"--kubeconfig={kc}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                # Dynamic hostPath volumes for the node's StorageClass (single node only).
                "--enable-hostpath-provisioner",
                "--bind-address=127.0.0.1",
                "--secure-port=10257",
            ],
        )
        self._spawn(
            "scheduler",
            [
                str(node_binary("kube-scheduler")),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=10259",
                # A pod tried before its PVC was bound waits for a volume event, or for
                # this long (default 5 min): a missed event kept basic-1 Pending for the
                # whole 5 min in one run. 15 s keeps the retry within the tests' bounds.
                "--pod-max-in-unschedulable-pods-duration=15s",
            ],
        )
        if (NODE_BIN / "kube-proxy").exists():
            self._spawn(
                "kube-proxy",
                [
                    str(node_binary("kube-proxy")),
                    f"--kubeconfig={kc}",
                    f"--hostname-override={NODE_NAME}",
                    "--proxy-mode=iptables",
                    f"--cluster-cidr={POD_SUBNET}",
                    # Pods reach Services on the same bridge: masquerade so replies return.
                    "--masquerade-all",
                    "--conntrack-max-per-core=0",
                    "--metrics-bind-address=127.0.0.1:10249",
                    "--healthz-bind-address=127.0.0.1:10256",
                ],
            )

    def _containerd(self) -> None:
        d = self.dir / "containerd"
        (d / "root").mkdir(parents=True, exist_ok=True)
        cni = self.dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-kubepd.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "kubepd",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(cni / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "config.toml").write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{d / "root"}"',
                    f'state = "{d / "state"}"',
                    "[grpc]",
                    f'  address = "{self.containerd_sock}"',
                    "[ttrpc]",
                    f'  address = "{d / "containerd.sock.ttrpc"}"',
                    "[debug]",
                    '  level = "warn"',
                    f"[{cri}]",
                    f'  sandbox_image = "{PAUSE_IMAGE}"',
                    # Without CAP_SYS_RESOURCE (as in some VMs and containers) kubelet's
                    # negative OOM scores cannot be set: keep them at containerd's own.
                    "  restrict_oom_score_adj = true",
                    f"[{cri}.containerd]",
                    '  snapshotter = "overlayfs"',
                    '  default_runtime_name = "runc"',
                    f"[{cri}.containerd.runtimes.runc]",
                    '  runtime_type = "io.containerd.runc.v2"',
                    f"[{cri}.containerd.runtimes.runc.options]",
                    f"  SystemdCgroup = {'false'}",
                    f"[{cri}.cni]",
                    f'  bin_dir = "{CNI_BIN}"',
                    f'  conf_dir = "{cni / "net.d"}"',
                    '[plugins."io.containerd.internal.v1.opt"]',
                    f'  path = "{d / "opt"}"',
                    "",
                ]
            )
        )
        self._spawn("containerd", ["containerd", "--config", str(d / "config.toml")])
        self._wait(
            lambda: self.ctr("version", check=False).returncode == 0,
            30,
            "containerd",
            "containerd",
        )

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run(
            "ctr",
            "--address",
            str(self.containerd_sock),
            "-n",
            "k8s.io",
            *args,
            check=check,
            timeout=timeout,
        )

    def _dns(self) -> None:
        (self.dir / "Corefile").write_text(
            "cluster.local:53 in-addr.arpa:53 {\n"
            "  errors\n"
            "  health 127.0.0.1:8080\n"
            "  ready 127.0.0.1:8181\n"
            "  kubernetes cluster.local in-addr.arpa {\n"
            f"    kubeconfig {self.kubeconfig} node\n"
            "    pods insecure\n"
            "    ttl 1\n"
            "  }\n"
            "}\n"
        )
        self._spawn("coredns", [str(node_binary("coredns")), "-conf", str(self.dir / "Corefile")])
        self._wait(
            lambda: self._curl_ok("http://127.0.0.1:8181/ready"), 60, "CoreDNS ready", "coredns"
        )

    def _kubelet(self) -> None:
        k = self.dir / "kubelet"
        k.mkdir(parents=True, exist_ok=True)
        (self.dir / "resolv.conf").write_text("# pods resolve through the node's CoreDNS only\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "address": GATEWAY,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [GATEWAY],
            "clusterDomain": "cluster.local",
            "resolvConf": str(self.dir / "resolv.conf"),
            "failSwapOn": False,
            "failCgroupV1": False,
            "podLogsDir": str(self.dir / "pod-logs"),
            "serializeImagePulls": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%"},
            "imageGCHighThresholdPercent": 100,
            "maxPods": 50,
        }
        (k / "config.yaml").write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            [
                str(node_binary("kubelet")),
                f"--config={k / 'config.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={k}",
                f"--cert-dir={k / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                "--v=1",
            ],
        )

    def _node_ready(self) -> bool:
        r = self.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return r.stdout.strip() == "True"

    # -- for tests and people -------------------------------------------------------------------
    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._tool("kubectl", args, check, input, timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return self._tool("helm", args, check, None, timeout)

    def _tool(
        self, name: str, args: tuple[str, ...], check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(control_binary(name)), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=self.env(),
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    def _hostpath_volumes(self) -> list[Path]:
        if "apiserver" not in self.procs or self.procs["apiserver"].poll() is not None:
            return []
        return hostpath_volumes(self.dir)

    def _save_state(self) -> None:
        pids = {n: p.pid for n, p in self.procs.items()}
        (self.dir / STATE).write_text(json.dumps({"pids": pids}))

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Everything this node started goes: kubelet first (no restarts of containers),
        then the pods' processes, containerd and its shims, the control plane, mounts,
        cgroups, network namespaces and the veth."""
        volumes = self._hostpath_volumes()
        order = ["kubelet", "coredns", "kube-proxy", "scheduler", "controller-manager"]
        for name in order:
            stop_process(self.procs.get(name), 3.0)
        stop_containers(self.dir)
        for name in ("containerd", "apiserver", "etcd"):
            stop_process(self.procs.get(name), 3.0)
        for p in self.procs.values():
            stop_process(p, 3.0)
        cleanup_leftovers(self.dir)
        for path in volumes:
            shutil.rmtree(path, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


STORAGE_CLASS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: kubepd-node
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
"""


def hostpath_volumes(workdir: Path) -> list[Path]:
    """Directories the hostPath provisioner made for a node's volumes: they outlive the
    node's processes, and nothing would delete them after teardown."""
    r = subprocess.run(
        [
            str(control_binary("kubectl")),
            f"--kubeconfig={workdir / 'kubeconfig'}",
            *("get", "pv", "-o", "jsonpath={.items[*].spec.hostPath.path}"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return [Path(p) for p in r.stdout.split() if p.startswith(HOSTPATH_PV_DIR)]


def _kill_group(pgid: int, grace_s: float = 3.0) -> None:
    """`_kill` for a process group this process did not start (`node down`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _pids_with_arg(needle: str) -> list[int]:
    """Processes whose command line holds `needle` (our containerd's socket path)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


def _cgroup_dirs() -> Iterator[Path]:
    """The kubepods cgroups kubelet made, deepest first, in every hierarchy."""
    root = Path("/sys/fs/cgroup")
    tops = [root / "kubepods"] if cgroup_version() == 2 else list(root.glob("*/kubepods"))
    for top in tops:
        if top.is_dir():
            yield from sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            )
            yield top


def stop_containers(workdir: Path | None) -> None:
    """Kill every process in kubelet's pod cgroups, then our containerd's shims."""
    for _ in range(3):
        pids: set[int] = set()
        for cg in _cgroup_dirs():
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in (cg / "cgroup.procs").read_text().split())
        if workdir is not None:
            pids.update(_pids_with_arg(str(workdir / "containerd" / "containerd.sock")))
        pids.discard(os.getpid())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def cleanup_leftovers(workdir: Path | None = None) -> None:
    """Undo what a node (this one, or one that crashed) left: processes in its pod
    cgroups, mounts under its directory, cgroups, namespaces, the veth and lock."""
    stop_containers(workdir)
    if workdir is not None:
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4]
            if target.startswith(str(workdir) + "/"):
                mounts.append(target)
        for target in sorted(mounts, key=len, reverse=True):
            run("umount", "-l", target, check=False)
    for cg in _cgroup_dirs():
        with contextlib.suppress(OSError):
            cg.rmdir()
    # Pod sandboxes' namespaces (containerd names them cni-*) and the node's own.
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith("cni-") or name == NETNS:
            run("ip", "netns", "del", name, check=False)
    run("ip", "link", "del", HOST_VETH, check=False)


def running_elsewhere() -> str:
    """Who holds the node lock, if a live process does ("" if none): `down` must not
    tear down a node a test session is using."""
    if not LOCK.exists():
        return ""
    fd = os.open(LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return LOCK.read_text().strip()
    finally:
        os.close(fd)
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description="a one-node Kubernetes cluster for development")
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--dir", default=".node-local", help="working directory (kubeconfig here)")
    ap.add_argument(
        "--image-dir",
        action="append",
        default=[],
        help="a directory of image archives to import (scripts/build-image prints it)",
    )
    args = ap.parse_args()
    d = Path(args.dir).resolve()
    if args.action == "down":
        owner = running_elsewhere()
        if owner:
            print(f"a node is running in another process ({owner}); not touching it")
            return 1
        state = d / STATE
        volumes = hostpath_volumes(d) if (d / "kubeconfig").exists() else []
        if state.exists():
            pids = json.loads(state.read_text())["pids"]
            if "kubelet" in pids:  # first, so it restarts no container
                _kill_group(pids.pop("kubelet"))
            stop_containers(d)
            for pid in pids.values():
                _kill_group(pid)
            state.unlink()
        cleanup_leftovers(d)
        for path in volumes:
            shutil.rmtree(path, ignore_errors=True)
        print(f"stopped the node in {d}")
        return 0
    node = Node(d).start(sorted(t for i in args.image_dir for t in Path(i).glob("*.tar")))
    node.detach()
    print(f"node {NODE_NAME} Ready in {node.started_in:.1f} s; KUBECONFIG={node.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
