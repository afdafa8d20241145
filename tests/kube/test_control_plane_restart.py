"""The Kubernetes control plane restarting under load: kube-apiserver, then etcd, each down
for a few seconds while the simulator heartbeats and the Go PD client asks a follower for
timestamps. Reads keep being answered from the sidecars' caches throughout; TSO and ID
allocation stop while no leader can renew its Lease and resume afterwards, never going
back and never reusing an id; no store or region is lost."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from pdcore.adapters.kube.client import KubeClient
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.conformance.gobuild import build_pdclient
from tests.support.kubecluster import KubeCluster
from tests.support.sidecars import Pods, Sidecar, run_fleet, wait_leader

pytestmark = pytest.mark.timeout(300)

DOWN_S = 3.0


async def _call(sc: Sidecar, method: str, request: object, timeout: float = 1.0) -> object:
    async with grpc.aio.insecure_channel(sc.address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=timeout)).header
        request.header.CopyFrom(pdpb_pb2.RequestHeader(cluster_id=cid.cluster_id))  # type: ignore[attr-defined]
        return await getattr(stub, method)(request, timeout=timeout)


async def test_apiserver_and_etcd_restarts_under_load_lose_nothing(
    kube_cluster: KubeCluster, pods: Pods, kube: KubeClient, fleet_on: Fleet, tmp_path: Path
) -> None:
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
    await run_fleet(fleet, 3.0)
    leader = await wait_leader(kube, pods)
    follower = next(sc for sc in pods.sidecars if sc is not leader)
    keys = sorted(r.start for r in fleet.regions.values())
    ids: list[int] = []

    async def alloc(deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                resp = await _call(follower, "AllocID", pdpb_pb2.AllocIDRequest(count=5), 3.0)
                assert not resp.header.HasField("error"), resp.header.error  # type: ignore[attr-defined]
                last = resp.id  # type: ignore[attr-defined]
                ids.extend(range(last - 4, last + 1))
                return
            except grpc.aio.AioRpcError:
                assert time.monotonic() < deadline, "AllocID did not resume"
                await asyncio.sleep(0.2)

    await alloc(10)
    reads = {"ok": 0, "failed": 0}
    stop = asyncio.Event()

    async def background() -> None:
        """The fleet keeps heartbeating and a client keeps looking regions up."""
        i = 0
        while not stop.is_set():
            await run_fleet(fleet, 0.2)
            key = keys[i % len(keys)]
            i += 1
            try:
                resp = await _call(follower, "GetRegion", pdpb_pb2.GetRegionRequest(region_key=key))
                ok = resp.region.start_key == key  # type: ignore[attr-defined]
            except grpc.aio.AioRpcError:
                ok = False
            reads["ok" if ok else "failed"] += 1

    out = tmp_path / "tso.txt"
    load = subprocess.Popen(
        [str(build_pdclient()), "-pd", follower.address, "-duration", "45s", "-workers", "4",
         "-out", str(out), "tso-load"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    task = asyncio.create_task(background())
    marks: list[tuple[str, int, int]] = []  # (what, down at, back at) in ns
    try:
        await asyncio.sleep(3.0)
        for what, restart in (
            ("kube-apiserver", kube_cluster.restart_apiserver),
            ("etcd", kube_cluster.restart_etcd),
        ):
            reads_before = dict(reads)
            down = time.time_ns()
            await asyncio.to_thread(restart, DOWN_S)
            marks.append((what, down, time.time_ns()))
            # Reads were answered by the follower's cache while the control plane was away.
            assert reads["ok"] - reads_before["ok"] >= 5, (what, reads_before, reads)
            await alloc(20)  # writes resume once a leader renews its Lease again
            await asyncio.sleep(3.0)
        stop.set()
        await task
        assert reads["failed"] == 0, reads
        summary = load.communicate(timeout=60)[0]
    finally:
        stop.set()
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, summary
    rows = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    assert len({ts for ts, _ in rows}) == len(rows), "a timestamp was handed out twice"
    for what, down, back in marks:
        # Every timestamp received after the control plane came back is above every one
        # received before it went away (replies inside the outage may interleave).
        before = [ts for ts, at in rows if at < down]
        after = [ts for ts, at in rows if at > back + 1_000_000_000]
        assert before and after, f"TSO did not resume after the {what} restart"
        assert min(after) > max(before), what
    assert len(set(ids)) == len(ids), "an id was reused"

    # Nothing lost: every store and region is still known, and a new store can join.
    stores = await _call(follower, "GetAllStores", pdpb_pb2.GetAllStoresRequest(), 3.0)
    assert {s.id for s in stores.stores} >= set(fleet.stores)  # type: ignore[attr-defined]
    for key in keys:
        resp = await _call(follower, "GetRegion", pdpb_pb2.GetRegionRequest(region_key=key), 3.0)
        assert resp.region.start_key == key  # type: ignore[attr-defined]
    new = await fleet.add_store({"zone": "z4", "host": "h4"})
    stores = await _call(follower, "GetAllStores", pdpb_pb2.GetAllStoresRequest(), 3.0)
    assert new in {s.id for s in stores.stores}  # type: ignore[attr-defined]
    print("control-plane restarts: reads", reads, "tso-load", summary.strip().splitlines()[-1])
