"""Conformance with the official Go PD client (github.com/tikv/pd/client, pinned in
goclient/go.mod) against a real `kubepd serve` process."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pdcore.proto import metapb_pb2, pdpb_pb2
from tests.conformance.gobuild import build_pdclient
from tests.support.pdproc import PdProcess

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pdclient() -> Path:
    return build_pdclient()


def run(pdclient: Path, pd: PdProcess, *args: str, timeout: float = 90) -> dict[str, object]:
    res = subprocess.run(
        [str(pdclient), "-pd", pd.address, *args], capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"pdclient {args} failed:\n{res.stderr[-3000:]}"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def bootstrap_two_regions(pd: PdProcess) -> dict[str, int]:
    """The TiKV side, through our own stubs: ids, Bootstrap, a second store, a split."""
    stub = pd.stub()
    cid = pd.cluster_id()
    h = pdpb_pb2.RequestHeader(cluster_id=cid)

    def alloc() -> int:
        return int(stub.AllocID(pdpb_pb2.AllocIDRequest(header=h), timeout=5).id)

    s1, r1, p1 = alloc(), alloc(), alloc()
    resp = stub.Bootstrap(
        pdpb_pb2.BootstrapRequest(
            header=h,
            store=metapb_pb2.Store(id=s1, address="127.0.0.1:20160", version="8.5.0"),
            region=metapb_pb2.Region(
                id=r1,
                region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
                peers=[metapb_pb2.Peer(id=p1, store_id=s1)],
            ),
        ),
        timeout=5,
    )
    assert not resp.header.HasField("error")
    s2 = alloc()
    put = stub.PutStore(
        pdpb_pb2.PutStoreRequest(
            header=h, store=metapb_pb2.Store(id=s2, address="127.0.0.1:20161", version="8.5.0")
        )
    )
    assert not put.header.HasField("error")
    parent = metapb_pb2.Region(
        id=r1,
        region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
        peers=[metapb_pb2.Peer(id=p1, store_id=s1)],
    )
    ask = stub.AskBatchSplit(pdpb_pb2.AskBatchSplitRequest(header=h, region=parent, split_count=1))
    r2, p2 = ask.ids[0].new_region_id, ask.ids[0].new_peer_ids[0]
    left = metapb_pb2.Region(
        id=r2,
        end_key=b"m",
        region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=2),
        peers=[metapb_pb2.Peer(id=p2, store_id=s1)],
    )
    right = metapb_pb2.Region(
        id=r1,
        start_key=b"m",
        region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=2),
        peers=[metapb_pb2.Peer(id=p1, store_id=s1)],
    )
    stub.ReportBatchSplit(pdpb_pb2.ReportBatchSplitRequest(header=h, regions=[left, right]))
    reqs = [
        pdpb_pb2.RegionHeartbeatRequest(
            header=h, region=r, leader=r.peers[0], approximate_size=1 << 20
        )
        for r in (left, right)
    ]
    call = stub.RegionHeartbeat(iter(reqs))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        scan = stub.ScanRegions(pdpb_pb2.ScanRegionsRequest(header=h, start_key=b""))
        if len(scan.region_metas) == 2:
            break
        time.sleep(0.05)
    call.cancel()
    return {"s1": s1, "s2": s2, "r1": r1, "r2": r2, "p1": p1, "p2": p2}


def test_members_and_cluster_id(pdclient: Path, pd: PdProcess) -> None:
    out = run(pdclient, pd, "members")
    assert out["cluster_id"] == pd.cluster_id() != 0
    assert out["leader_url"] == f"http://{pd.address}"
    assert out["members"] == ["pd-conf"]


def test_ten_thousand_timestamps_from_concurrent_goroutines(pdclient: Path, pd: PdProcess) -> None:
    out = run(pdclient, pd, "-n", "10000", "-workers", "16", "tso")
    assert out["count"] == 10000 and out["unique"] == 10000


@pytest.mark.parametrize("router", [False, True], ids=["unary", "query-region-stream"])
def test_regions_and_stores_after_bootstrap(pdclient: Path, pd: PdProcess, router: bool) -> None:
    ids = bootstrap_two_regions(pd)
    flags = ["-router"] if router else []
    out = run(pdclient, pd, *flags, "-keys", "a,z", "-id", str(ids["r1"]), "regions")
    assert out["get:a"]["id"] == ids["r2"] and out["get:z"]["id"] == ids["r1"]  # type: ignore[index]
    assert out["prev:z"]["id"] == ids["r2"] and out["prev:a"] is None  # type: ignore[index]
    assert out["by_id"]["start"] == b"m".hex() and out["by_id"]["leader_id"] == ids["p1"]  # type: ignore[index]
    assert [r["id"] for r in out["scan"]] == [ids["r2"], ids["r1"]]  # type: ignore[attr-defined]
    assert [r["id"] for r in out["batch_scan"]] == [ids["r2"], ids["r1"]]  # type: ignore[attr-defined]
    stores = run(pdclient, pd, "-id", str(ids["s2"]), "stores")
    assert stores["store"]["address"] == "127.0.0.1:20161"  # type: ignore[index]
    assert sorted(stores["all"]) == sorted([ids["s1"], ids["s2"]])  # type: ignore[arg-type]


def test_gc_safe_points(pdclient: Path, pd: PdProcess) -> None:
    bootstrap_two_regions(pd)
    out = run(pdclient, pd, "gc")
    assert out == {"safe_point": 100, "after_lower": 100, "service_min": 200}


def test_alloc_id_unique(pd: PdProcess) -> None:
    stub = pd.stub()
    h = pdpb_pb2.RequestHeader(cluster_id=pd.cluster_id())
    got: list[int] = []
    for count in [1] * 50 + [100, 3, 1500]:
        resp = stub.AllocID(pdpb_pb2.AllocIDRequest(header=h, count=count))
        got.extend(range(resp.id - count + 1, resp.id + 1))
    assert len(got) == len(set(got))


def test_kill9_during_tso_load_never_goes_back(
    pdclient: Path, pd: PdProcess, tmp_path: Path
) -> None:
    """kill -9 mid-load, restart on the same data dir and ports: every timestamp after
    the restart is above every one before it, all unique, and ids are never reused."""
    stub = pd.stub()
    h = pdpb_pb2.RequestHeader(cluster_id=pd.cluster_id())
    ids_before = [stub.AllocID(pdpb_pb2.AllocIDRequest(header=h, count=10)).id for _ in range(20)]
    out_file = tmp_path / "tso.txt"
    load = subprocess.Popen(
        [
            str(pdclient),
            "-pd",
            pd.address,
            "-duration",
            "8s",
            "-workers",
            "4",
            "-out",
            str(out_file),
            "tso-load",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(2.5)
        pd.kill9()
        killed_at = time.time_ns()
        time.sleep(0.5)
        pd.start()
        stdout, _ = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
    summary = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    rows = [tuple(map(int, line.split())) for line in out_file.read_text().splitlines()]
    before = [ts for ts, at in rows if at < killed_at]
    after = [ts for ts, at in rows if at > killed_at]
    assert before and after, f"load saw no timestamps on one side of the kill: {summary}"
    assert min(after) > max(before)
    assert len({ts for ts, _ in rows}) == len(rows)
    stub = pd.stub()
    new_id = stub.AllocID(pdpb_pb2.AllocIDRequest(header=h)).id
    assert new_id > max(ids_before)


def test_a_keyspace_client_loads_and_uses_its_keyspace(pdclient: Path, pd: PdProcess) -> None:
    """The keyspace is created through PD's HTTP API on the client port (as pd-ctl
    would), then the Go client loads it by name, binds a client to its id and uses it,
    and PD's Go HTTP client reads and patches it at the client URL."""
    import urllib.request

    req = urllib.request.Request(
        f"http://{pd.address}/pd/api/v2/keyspaces",
        data=json.dumps(
            {"name": "tenant_go", "config": {"gc_management_type": "keyspace_level_gc"}}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        created = json.loads(r.read())
    out = run(pdclient, pd, "-keyspace", "tenant_go", "keyspace")
    assert out["id"] == created["id"] == 1
    assert (out["name"], out["state"]) == ("tenant_go", "ENABLED")
    assert out["config"] == {"gc_management_type": "keyspace_level_gc"}
    assert int(out["ts_physical"]) > 0  # type: ignore[call-overload]
    assert out["all"] == ["DEFAULT", "tenant_go"]
    assert out["state_after"] == "DISABLED"
    assert "does not exist" in str(out["missing_error"])
    # PD's Go HTTP client, on the client URL it discovered over gRPC: same port.
    assert (out["http_id"], out["http_state"]) == (1, "DISABLED")
    assert out["http_config"] == {"gc_management_type": "global_gc"}
    with urllib.request.urlopen(f"http://{pd.address}/pd/api/v2/keyspaces/tenant_go") as r:
        assert json.loads(r.read())["state"] == "DISABLED"
