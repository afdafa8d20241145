"""Operator steps are fenced by the scheduler Lease: a sidecar puts steps on its TiKV's
heartbeat stream only when they are signed with the current holder's term. A holder that
lost the role — it died, was paused, or was cut off and someone else took over — is
refused, on the real API server and through real sidecar processes."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from pdcore.adapters import codec
from pdcore.adapters.kube import convert, kinds
from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.fence import SchedulerFence
from pdcore.adapters.kube.lease import LeaseRecord, LeaseRole
from pdcore.domain.commands import RegionCommand, TransferLeader
from pdcore.domain.region import Peer, RegionEpoch
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.support.kubecluster import KubeCluster
from tests.support.sidecars import Pods, Sidecar, run_fleet, wait_leader

pytestmark = pytest.mark.timeout(300)
D, R = 2.0, 0.3


async def test_the_fence_admits_only_the_current_term(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    clients = [KubeClient.from_kubeconfig(kube_cluster.kubeconfig) for _ in range(3)]
    a = LeaseRole(clients[0], namespace, "c-scheduler", "op-a", D, R)
    b = LeaseRole(clients[1], namespace, "c-scheduler", "op-b", D, R)
    fence = SchedulerFence(clients[2], namespace, "c-scheduler")
    try:
        assert "nobody holds" in await fence.refusal("op-a", 0)
        assert await a.try_once()
        term_a = a.token
        assert await fence.refusal("op-a", term_a) == ""
        assert "not the scheduler" in await fence.refusal("op-b", term_a)
        assert "not the scheduler" in await fence.refusal("op-a", term_a + 1)
        # While the record read is unexpired, the holder's steps need no further read.
        reads = fence.reads
        assert await fence.refusal("op-a", term_a) == ""
        assert fence.reads == reads
        # a stops renewing (paused, cut off); b takes over once a's lease has expired.
        deadline = time.monotonic() + 10
        while not await b.try_once():
            assert time.monotonic() < deadline, "b never took the expired lease"
            await asyncio.sleep(0.2)
        assert b.token == term_a + 1
        refusal = await fence.refusal("op-a", term_a)
        assert "'op-b'" in refusal and f"term {b.token}" in refusal, refusal
        assert await fence.refusal("op-b", b.token) == ""
        # Once a later term was admitted, the earlier one is refused without a read.
        reads = fence.reads
        assert "stale scheduler term" in await fence.refusal("op-a", term_a)
        assert fence.reads == reads
        # b's lease runs out with nobody renewing: its own steps are refused too.
        await asyncio.sleep(D + 0.2)
        assert "expired" in await fence.refusal("op-b", b.token)
    finally:
        for c in clients:
            await c.close()


async def scheduler_term(kube: KubeClient, pods: Pods) -> tuple[str, int]:
    lease = await kube.get(kinds.LEASES.path(pods.namespace, f"{pods.name}-scheduler"))
    rec = LeaseRecord.of(lease)
    return rec.holder, rec.transitions


async def sidecar_urls(kube: KubeClient, pods: Pods, stores: list[int]) -> dict[int, str]:
    """The sidecar each store announced in its TiKVStore status."""
    deadline = time.monotonic() + 30
    while True:
        urls: dict[int, str] = {}
        for sid in stores:
            try:
                obj = await kube.get(
                    kinds.TIKV_STORES.path(pods.namespace, convert.store_name(pods.name, sid))
                )
            except Exception:
                continue
            url = (obj.get("status") or {}).get("sidecar", {}).get("url")
            if url:
                urls[sid] = url
        if len(urls) == len(stores):
            return urls
        assert time.monotonic() < deadline, f"stores without a sidecar: {set(stores) - set(urls)}"
        await asyncio.sleep(0.3)


async def deliver(
    sc: Sidecar, cid: int, term: tuple[str, int], store: int, cmd: RegionCommand
) -> int:
    async with grpc.aio.insecure_channel(sc.address) as ch:
        resp = await kubepdpb_pb2_grpc.SidecarStub(ch).DeliverSteps(
            kubepdpb_pb2.DeliverStepsRequest(
                cluster_id=cid,
                scheduler=kubepdpb_pb2.SchedulerTerm(holder=term[0], term=term[1]),
                store_id=store,
                commands=[codec.command_to_pb(cmd, cid)],
            ),
            timeout=5,
        )
        return int(resp.delivered)


async def test_a_deposed_scheduler_is_refused_by_the_sidecars(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
    await run_fleet(fleet, 2.0)
    urls = await sidecar_urls(kube, pods, sorted(fleet.stores))
    by_url = {f"http://{sc.address}": sc for sc in pods.sidecars}
    for i, sid in enumerate(sorted(fleet.stores)):  # announced by the sidecar its TiKV uses
        assert urls[sid] == f"http://{fleet.store_addresses[i % 3]}"
    old_term = await scheduler_term(kube, pods)
    leader = await wait_leader(kube, pods)
    assert old_term[0].startswith(leader.pod + "@"), "the pd-leader holds the scheduler role"

    # The pd-leader (and with it the scheduler) dies; a new one takes both roles over.
    pods.kill9(leader)
    deadline = time.monotonic() + 20
    while (term := await scheduler_term(kube, pods)) == old_term or not term[0]:
        assert time.monotonic() < deadline, "nobody took the scheduler role over"
        await run_fleet(fleet, 0.3)
    assert term[1] > old_term[1]

    # A region led from a store whose sidecar survived, and a voter to hand it to.
    live = {sid for sid, url in urls.items() if by_url[url] is not leader}
    region = next(r for r in fleet.regions.values() if r.leader_store in live)
    source = region.leader_store
    target = next(p for p in region.peers if p.store_id != source)
    sidecar = by_url[urls[source]]
    cmd = RegionCommand(
        region.id,
        RegionEpoch(region.conf_ver, region.version),
        Peer(region.leader.id, source),
        TransferLeader(Peer(target.id, target.store_id)),
    )
    cid = fleet.cluster_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(sidecar, cid, old_term, source, cmd)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not the scheduler" in (refused.value.details() or "")
    await run_fleet(fleet, 1.5)
    assert fleet.regions[region.id].leader_store == source, "a refused step reached TiKV"

    # The same step signed with the current term goes through to TiKV.
    assert await deliver(sidecar, cid, term, source, cmd) == 1
    await run_fleet(fleet, 1.5)
    assert fleet.regions[region.id].leader_store == target.store_id, (
        "the current scheduler's step did not reach TiKV"
    )
