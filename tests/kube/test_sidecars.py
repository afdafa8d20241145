"""PD as sidecars against the real API server: three `kubepd sidecar` processes, the
simulator as TiKV spread over them, and the official Go PD client pointed at a follower.
Bootstrap, heartbeats, region lookups, TSO, scheduling through the sidecars, and
failover under TSO load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import KubeClient, crd_path
from pdcore.adapters.kube.lease import LeaseRecord
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.conformance.gobuild import build_pdclient
from tests.support.sidecars import (
    Pods,
    Sidecar,
    answers,
    create_tikv_cluster,
    go,
    run_fleet,
    wait_leader,
)

pytestmark = pytest.mark.timeout(300)


async def test_fleet_and_go_client_through_followers(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(60, 3), size_mib=32)
    await run_fleet(fleet, 4.0)
    leader = await wait_leader(kube, pods)
    follower = next(sc for sc in pods.sidecars if sc is not leader)
    members = go("-pd", follower.address, "members")
    assert members["leader_url"] == f"http://{follower.address}"  # TiKV stays local
    tso = go("-pd", follower.address, "-n", "3000", "-workers", "8", "tso")
    assert tso["unique"] == 3000
    first = min(fleet.regions.values(), key=lambda r: r.start)
    regions = go("-pd", follower.address, "-keys", "t00000001", "-id", str(first.id), "regions")
    assert regions["by_id"]["id"] == first.id  # type: ignore[index]
    assert len(regions["scan"]) == 60  # type: ignore[arg-type]


async def test_scheduling_reaches_tikv_through_the_sidecars(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    # Four stores, all regions on the first three: the new one must fill up through
    # steps the leader sends via the sidecar that owns each region leader's stream.
    await fleet.bootstrap(zones(3), round_robin(90, 3), size_mib=16)
    await fleet.add_store({"zone": "z4", "host": "h4"})
    deadline = time.monotonic() + 90
    newest = max(fleet.stores)
    while time.monotonic() < deadline:
        await run_fleet(fleet, 1.0)
        if sum(1 for r in fleet.regions.values() if r.peer_on(newest)) >= 55:
            break
    on_new = sum(1 for r in fleet.regions.values() if r.peer_on(newest))
    assert on_new >= 55, f"only {on_new} peers reached the new store"
    # Nothing lost on the way: moves add before they remove.
    assert all(len(r.peers) >= 3 for r in fleet.regions.values())


async def _sync_request(cluster_id: int) -> AsyncIterator[pdpb_pb2.SyncRegionRequest]:
    yield pdpb_pb2.SyncRegionRequest(
        header=pdpb_pb2.RequestHeader(cluster_id=cluster_id),
        member=pdpb_pb2.Member(name="test-reader"),
    )
    await asyncio.Event().wait()  # a reader keeps its request stream open


async def test_only_the_pd_leader_feeds_region_caches(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    """A cache fed by a follower would freeze (a follower's tree gets no change events):
    followers refuse SyncRegions, and a pd-leader that loses its Lease ends the feeds it
    serves, so their readers reconnect to the new one."""
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
    await run_fleet(fleet, 2.0)
    leader = await wait_leader(kube, pods)
    follower = next(sc for sc in pods.sidecars if sc is not leader)
    cid = fleet.cluster_id
    async with grpc.aio.insecure_channel(follower.address) as ch:

        async def read_all() -> None:
            async for _ in pdpb_pb2_grpc.PDStub(ch).SyncRegions(_sync_request(cid)):
                pass

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(read_all(), 10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not the pd-leader" in (refused.value.details() or "")

    async with grpc.aio.insecure_channel(leader.address) as ch:
        feed = pdpb_pb2_grpc.PDStub(ch).SyncRegions(_sync_request(cid))
        snapshot = 0
        async for resp in feed:
            if not resp.regions:  # the end of the snapshot
                break
            snapshot += len(resp.regions)
        assert snapshot == 30
        assert leader.proc is not None
        os.killpg(leader.proc.pid, signal.SIGSTOP)  # its Lease lapses; another takes it
        try:
            await wait_leader(kube, pods, among=[sc for sc in pods.sidecars if sc is not leader])
        finally:
            os.killpg(leader.proc.pid, signal.SIGCONT)

        async def drain() -> None:
            async for _ in feed:
                pass

        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(drain(), 10)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()


async def test_a_restarted_pd_leader_syncs_before_it_campaigns(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    """The pd-leader's pod restarts while the others cannot campaign (paused): its new
    sidecar has an empty region cache, so it must not take the lapsed Lease — until a
    synced sidecar leads and it has synced from that one."""
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
    await run_fleet(fleet, 2.0)
    leader = await wait_leader(kube, pods)
    others = [sc for sc in pods.sidecars if sc is not leader]
    lease_path = kinds.LEASES.path(pods.namespace, f"{pods.name}-pd-leader")
    term = LeaseRecord.of(await kube.get(lease_path)).transitions
    for sc in others:
        assert sc.proc is not None
        os.killpg(sc.proc.pid, signal.SIGSTOP)
    try:
        pods.kill9(leader)
        logged = len(leader.log.read_text())
        pods.start(leader)
        # A condition, not a sleep: the restarted sidecar has seen the old Lease lapse
        # (nobody synced can renew it) and chose not to campaign.
        deadline = time.monotonic() + 30
        while "not campaigning" not in leader.log.read_text()[logged:]:
            assert time.monotonic() < deadline, "the restarted sidecar never saw the lapse"
            await asyncio.sleep(0.1)
        assert await answers(leader), "the restarted sidecar does not answer"
        # The record still names the dead incarnation (same identity): what would show a
        # take-over is a new term.
        assert LeaseRecord.of(await kube.get(lease_path)).transitions == term, (
            "an unsynced sidecar took the pd-leader role"
        )
        assert (
            "lease role acquired lease=" + pods.name + "-pd-leader"
            not in (leader.log.read_text()[logged:])
        )
    finally:
        for sc in others:
            assert sc.proc is not None
            os.killpg(sc.proc.pid, signal.SIGCONT)
    await wait_leader(kube, pods, among=others)
    deadline = time.monotonic() + 10
    while "region cache in sync" not in leader.log.read_text():
        assert time.monotonic() < deadline, "the restarted sidecar never synced"
        await asyncio.sleep(0.2)


async def test_failover_under_tso_load(pods: Pods, kube: KubeClient, tmp_path: Path) -> None:
    """kill -9 the pd-leader five times under TSO load from the Go client on a follower:
    a new leader serves within 3 s, timestamps never go back, ids are never reused."""
    leader = await wait_leader(kube, pods)
    client_side = next(sc for sc in pods.sidecars if sc is not leader)
    seen_ids: list[int] = []

    async def alloc(sc: Sidecar) -> None:
        for _ in range(30):
            try:
                async with grpc.aio.insecure_channel(sc.address) as ch:
                    stub = pdpb_pb2_grpc.PDStub(ch)
                    cid = (
                        await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=2)
                    ).header.cluster_id
                    resp = await stub.AllocID(
                        pdpb_pb2.AllocIDRequest(
                            header=pdpb_pb2.RequestHeader(cluster_id=cid), count=5
                        ),
                        timeout=3,
                    )
                    seen_ids.extend(range(resp.id - 4, resp.id + 1))
                    return
            except Exception:
                await asyncio.sleep(0.2)
        raise AssertionError("AllocID never succeeded")

    failovers: list[float] = []
    for _ in range(5):
        leader = await wait_leader(kube, pods)
        client_side = next(
            sc for sc in pods.sidecars if sc is not leader and sc.proc and sc.proc.poll() is None
        )
        await alloc(client_side)
        out = tmp_path / f"tso-{len(failovers)}.txt"
        load = subprocess.Popen(
            [
                str(build_pdclient()),
                "-pd",
                client_side.address,
                "-duration",
                "7s",
                "-workers",
                "4",
                "-out",
                str(out),
                "tso-load",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        await asyncio.sleep(2.0)
        killed = time.time_ns()
        pods.kill9(leader)
        new = await wait_leader(kube, pods, timeout=10)
        failovers.append((time.time_ns() - killed) / 1e9)
        # The server side: a new leader answers TSO within 3 s of the kill (2 s lease).
        assert failovers[-1] < 3.0, f"no leader serving TSO {failovers[-1]:.1f}s after the kill"
        load.communicate(timeout=60)
        rows = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
        # No successor can serve before the dead leader's lease has run out (2 s), so
        # whatever arrived within 1 s of the kill was issued by the old leader (its
        # answers may reach the client's workers slightly out of order).
        cut = killed + 1_000_000_000
        before = [ts for ts, at in rows if at < cut]
        after = [ts for ts, at in rows if at > cut]
        assert before and after
        assert min(after) > max(before)
        assert len({ts for ts, _ in rows}) == len(rows)
        # The Go client adds its own reconnect backoff on top of the failover.
        gap = (min(at for ts, at in rows if at > killed) - killed) / 1e9
        assert gap < 8.0, f"the Go client's first timestamp came {gap:.1f}s after the kill"
        await alloc(new)
        pods.start(leader)  # the killed pod comes back as a follower
    assert len(set(seen_ids)) == len(seen_ids), "an id was reused"
    print("failover seconds:", [round(f, 2) for f in failovers])


async def test_placement_rules_and_config_from_resources_apply_live(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    """A PlacementRule object created while the sidecars run moves replicas where it
    says, and the TiKVCluster's schedule config reaches the pd-leader, without restarts."""
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
    await fleet.add_store({"zone": "z4", "host": "h4"})
    z1 = next(sid for sid, s in fleet.stores.items() if s.labels.get("zone") == "z1")
    pids = [sc.proc.pid for sc in pods.sidecars if sc.proc is not None]
    rules = crd_path(pods.namespace, "placementrules")
    await kube.create(
        rules,
        {
            "apiVersion": "kubepd.io/v1alpha1",
            "kind": "PlacementRule",
            "metadata": {"name": "not-in-z1"},
            "spec": {
                "cluster": pods.name,
                "groupID": "pd",
                "id": "default",
                "role": "voter",
                "count": 3,
                "labelConstraints": [{"key": "zone", "op": "notIn", "values": ["z1"]}],
            },
        },
    )
    deadline = time.monotonic() + 120
    while any(r.peer_on(z1) for r in fleet.regions.values()):
        if time.monotonic() > deadline:
            leader = await wait_leader(kube, pods)
            why = await asyncio.to_thread(
                http_json,
                f"http://127.0.0.1:{leader.status_port}/pd/api/v1/schedulers/diagnostic/rule-checker",
            )
            raise AssertionError(f"replicas stayed on z1 against the rule: {why}")
        await run_fleet(fleet, 1.0)
    assert all(len(r.peers) == 3 for r in fleet.regions.values())
    applied = (await kube.get(f"{rules}/not-in-z1"))["status"]["conditions"][0]
    assert (applied["type"], applied["status"]) == ("Applied", "True")

    await create_tikv_cluster(
        kube, pods.namespace, pods.name, schedule={"leader-schedule-limit": 9}
    )
    leader = await wait_leader(kube, pods)
    url = f"http://127.0.0.1:{leader.status_port}/pd/api/v1/config/schedule"
    deadline = time.monotonic() + 20
    while (await asyncio.to_thread(http_json, url)).get("leader-schedule-limit") != 9:
        assert time.monotonic() < deadline, "the TiKVCluster's config never reached PD"
        await asyncio.sleep(0.3)
    assert [sc.proc.pid for sc in pods.sidecars if sc.proc is not None] == pids


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def test_region_operator_objects_become_pd_operators(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(12, 3), size_mib=16)
    await run_fleet(fleet, 2.0)
    region = next(iter(fleet.regions.values()))
    target = next(p.store_id for p in region.peers if p.store_id != region.leader_store)
    path = crd_path(pods.namespace, "regionoperators")

    def rop(name: str, spec: dict[str, object]) -> dict[str, object]:
        return {
            "apiVersion": "kubepd.io/v1alpha1",
            "kind": "RegionOperator",
            "metadata": {"name": name},
            "spec": {"cluster": pods.name, **spec},
        }

    await kube.create(
        path, rop("move", {"transferLeader": {"regionID": region.id, "toStore": target}})
    )
    await kube.create(path, rop("nowhere", {"transferLeader": {"regionID": 999999, "toStore": 1}}))
    deadline = time.monotonic() + 30
    while True:
        move = (await kube.get(f"{path}/move")).get("status", {})
        bad = (await kube.get(f"{path}/nowhere")).get("status", {})
        if move.get("phase") == "Succeeded" and bad.get("phase") == "Failed":
            break
        assert time.monotonic() < deadline, (move, bad)
        await run_fleet(fleet, 0.5)
    assert fleet.regions[region.id].leader_store == target
    assert move["kind"] == "transferLeader" and move["stepsDone"] == move["stepsTotal"] == 1
    assert "region 999999 not found" in bad["message"]
