"""`kubepd tikv-standin` as processes against `kubepd serve`: the first one bootstraps,
the next joins, each opens TiKV's port once registered, and a restarted one keeps its
store id (read from --data-dir) and its regions; PD's replica checker and balancers move
regions and leaders between the processes through their peer protocol (pdsim.peers)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdcore.cli.tikv_standin import parse_labels, tikv_security
from tests.support.certs import MemberCerts, client_context
from tests.support.kubecluster import stop_process
from tests.support.pdproc import PdProcess
from tests.support.ports import free_port


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[PdProcess]:
    p = PdProcess(tmp_path / "pd").start()
    try:
        yield p
    finally:
        p.stop()


def standin(
    pd: PdProcess,
    data_dir: Path,
    port: int,
    log: Path,
    regions: int = 1,
    host: str = "",
    config: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A stand-in advertising `host`:port (the stand-ins reach each other there), or an
    unresolvable name as a pod's would be elsewhere."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "tikv-standin",
            f"--pd={pd.address}",
            f"--addr=127.0.0.1:{port}",
            f"--advertise-addr={host or f'tikv-{port}.peer.test.svc'}:{port}",
            f"--data-dir={data_dir}",
            f"--config={config or '/etc/tikv/tikv.toml'}",  # a missing file: no settings
            "--store-heartbeat=1",
            "--labels=zone=a",
            f"--initial-regions={regions}",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stores(pd: PdProcess) -> dict[str, dict[str, object]]:
    try:
        with urllib.request.urlopen(
            pd.status + "/pd/api/v1/stores", timeout=2, context=pd.health_context
        ) as r:
            data = json.load(r)
    except urllib.error.HTTPError:  # not bootstrapped yet
        return {}
    return {s["store"]["address"]: s for s in data.get("stores", [])}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait(cond: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_standins_bootstrap_join_and_keep_their_store_ids(pd: PdProcess, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    procs = [
        standin(pd, tmp_path / f"s{i}", port, tmp_path / f"s{i}.log")
        for i, port in enumerate(ports)
    ]
    try:
        addrs = [f"tikv-{p}.peer.test.svc:{p}" for p in ports]
        wait(lambda: set(addrs) <= set(stores(pd)), "both stores registered")
        wait(lambda: all(port_open(p) for p in ports), "TiKV ports open")
        first = stores(pd)
        ids = {a: first[a]["store"]["id"] for a in addrs}  # type: ignore[index]
        assert len(set(ids.values())) == 2
        assert all(first[a]["store"]["labels"] == [{"key": "zone", "value": "a"}] for a in addrs)
        # Exactly one of them bootstrapped: the cluster has one region, led by that store.
        wait(
            lambda: (
                sum(int(s["status"].get("region_count", 0)) for s in stores(pd).values())  # type: ignore[attr-defined]
                == 1
            ),
            "the bootstrap region reported",
        )
        stop_process(procs[1])
        procs[1] = standin(pd, tmp_path / "s1", ports[1], tmp_path / "s1.log")
        wait(lambda: port_open(ports[1]), "restarted stand-in up")
        again = stores(pd)
        assert len(again) == 2
        assert again[addrs[1]]["store"]["id"] == ids[addrs[1]]  # type: ignore[index]
    finally:
        for p in procs:
            stop_process(p)


def test_bad_labels_are_refused() -> None:
    assert parse_labels("zone=a, host=h1") == {"zone": "a", "host": "h1"}
    with pytest.raises(ValueError, match="want key=value"):
        parse_labels("zone")


LOCAL = "127.0.0.1"


def read_back(log: Path) -> list[int]:
    """How many regions the stand-in read back from --data-dir, at each start."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [int(e["regions"]) for e in lines if e.get("msg") == "regions read back"]


def post(pd: PdProcess, path: str, body: dict[str, object]) -> None:
    req = urllib.request.Request(pd.status + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5, context=pd.health_context) as r:
        assert r.status == 200


def counts(pd: PdProcess) -> dict[str, tuple[int, int]]:
    """(regions, leaders) per store address, as PD's /stores reports them."""
    return {
        a: (int(s["status"].get("region_count", 0)), int(s["status"].get("leader_count", 0)))  # type: ignore[attr-defined]
        for a, s in stores(pd).items()
    }


def test_regions_replicate_and_balance_between_standins(tmp_path: Path) -> None:
    """Three replicas on three stand-ins (16 regions split at bootstrap): every store
    holds every region and leads some. Two more stand-ins join: regions and leaders
    move to them (snapshots, promotions, leader hand-offs, removals between
    processes), and no peer or leader is lost on the way; one restarted keeps its peers."""
    pd = PdProcess(tmp_path / "pd").start()  # PD's defaults: 3 replicas
    ports = [free_port() for _ in range(5)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports[:3]):
            procs.append(standin(pd, tmp_path / f"s{i}", port, tmp_path / f"s{i}.log", 16, LOCAL))
        addrs = [f"{LOCAL}:{p}" for p in ports]
        t0 = time.monotonic()
        wait(lambda: stores(pd), "the cluster bootstrapped")
        # As the node suite's cluster: leaders balanced to within a few, snapshots not
        # held back by PD's default 15 a minute per store.
        post(pd, "/pd/api/v1/config", {"tolerant-size-ratio": 0.5})
        post(pd, "/pd/api/v1/stores/limit", {"rate": 600})
        wait(
            lambda: [counts(pd).get(a, (0, 0))[0] for a in addrs[:3]] == [16, 16, 16],
            "16 regions with a peer on each of 3 stores",
            90,
        )
        # Within the tolerance (a difference of 3), 16 leaders leave at least 4 a store.
        wait(lambda: all(counts(pd)[a][1] >= 4 for a in addrs[:3]), "leaders on every store", 90)
        t1 = time.monotonic()
        for i, port in enumerate(ports[3:], start=3):
            procs.append(standin(pd, tmp_path / f"s{i}", port, tmp_path / f"s{i}.log", 16, LOCAL))
        wait(
            lambda: (
                all(counts(pd).get(a, (0, 0))[0] >= 5 for a in addrs[3:])
                and all(counts(pd).get(a, (0, 0))[1] >= 1 for a in addrs[3:])
            ),
            "regions and leaders on the 2 new stores",
            120,
        )
        wait(lambda: sum(c[0] for c in counts(pd).values()) == 48, "48 peers in all", 60)
        assert sum(c[1] for c in counts(pd).values()) == 16
        # A stand-in restarted (its pod replaced) comes back with its peers and leaders.
        before = counts(pd)[addrs[3]]
        stop_process(procs[3])
        procs[3] = standin(pd, tmp_path / "s3", ports[3], tmp_path / "s3.log", 16, LOCAL)
        wait(lambda: port_open(ports[3]), "the restarted stand-in up")
        assert read_back(tmp_path / "s3.log") == [before[0]]  # PD's count: from its own view
        assert sum(c[0] for c in counts(pd).values()) == 48
        print(
            f"\n3 stores replicated and balanced in {t1 - t0:.1f} s, 5 in "
            f"{time.monotonic() - t1:.1f} s; (regions, leaders) per store: "
            f"{list(counts(pd).values())}"
        )
    finally:
        for p in procs:
            stop_process(p)
        pd.stop()


def test_standins_over_mutual_tls(tmp_path: Path) -> None:
    """With TiKV's [security] table in --config (what the operator writes for a cluster
    with spec.tls), the stand-ins dial PD and each other over mutual TLS: PD accepts
    only certificates of its CA, and the regions still get their three replicas."""
    certs = MemberCerts.make(tmp_path / "certs")
    pd = PdProcess(
        tmp_path / "pd",
        extra=certs.flags(),
        health_context=client_context(certs.ca, certs.member),
    ).start()
    config = tmp_path / "tikv.toml"
    config.write_text(
        "[pd]\nendpoints = []\n[security]\n"
        f'ca-path = "{certs.ca.path}"\n'
        f'cert-path = "{certs.member.cert}"\n'
        f'key-path = "{certs.member.key}"\n'
    )
    ports = [free_port() for _ in range(3)]
    procs = [
        standin(pd, tmp_path / f"s{i}", p, tmp_path / f"s{i}.log", 4, LOCAL, config)
        for i, p in enumerate(ports)
    ]
    try:
        addrs = [f"{LOCAL}:{p}" for p in ports]
        wait(
            lambda: [counts(pd).get(a, (0, 0))[0] for a in addrs] == [4, 4, 4],
            "4 regions with a peer on each of 3 stores, over TLS",
            90,
        )
        # The peer protocol refuses a client without a certificate of the CA.
        plain = ssl.create_default_context(cafile=str(certs.ca.path))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            urllib.request.urlopen(
                urllib.request.Request(f"https://{addrs[0]}/standin/v1/region", data=b"{}"),
                timeout=3,
                context=plain,
            )
    finally:
        for p in procs:
            stop_process(p)
        pd.stop()


def test_a_bad_security_table_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "tikv.toml"
    config.write_text('[security]\ncert-path = "/nonexistent.crt"\n')
    with pytest.raises(SystemExit, match="both --cert and --key"):
        tikv_security(str(config))
    assert not tikv_security(str(tmp_path / "missing.toml")).enabled
