"""The scheduler role after a takeover: the prepared gate (PD's rule) holds schedulers
back, with the reason in the diagnostics, until the region view has caught up; and a
synced view keeps region sizes, so a new holder schedules on real sizes."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest

from pdcore.adapters import codec
from pdcore.adapters.codec import SYNCED_FLOW_INTERVAL_S
from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.events import EventRecorder
from pdcore.adapters.kube.scheduling_policies import SchedulingPolicyResources
from pdcore.adapters.sidecar.proposals import ProposeService
from pdcore.adapters.sidecar.store_feed import StoreFeed, read_region_sizes
from pdcore.domain.region import NO_FLOW, FlowStats, RegionEpoch
from pdcore.domain.region_tree import RegionTree
from pdcore.policy.abi import Proposal, ProposalKind
from pdcore.policy.outcome import FailureKind, PolicyFailure
from pdcore.policy.spec import PolicySpec
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc, pdpb_pb2
from pdcore.scheduling.prepare import COLLECT_TIMEOUT_S, PrepareChecker
from pdcore.service.policies import LoadedPolicy
from pdcore.service.region_sync import apply_synced
from pdcore.service.scheduler_role import SchedulerRole
from tests.support.clocks import SteppedClock
from tests.unit.scheduling.helpers import NOW, cluster, region, store
from tests.unit.test_store_policies import Module, Sink, View

if TYPE_CHECKING:
    from pdcore.adapters.wasm.host import WasmHost


def unbalanced(n: int = 20) -> View:
    """Every region led from store 1: balance-leader has work as soon as it may run."""
    base = cluster([store(1), store(2), store(3)], [region(i, [1, 2, 3], 1) for i in range(1, n)])
    return View(base.tree, base.config, base.store_map)


def role_on(view: View, sink: Sink, clock: SteppedClock) -> SchedulerRole:
    return SchedulerRole(view, sink, clock, tick_s=0.05)


async def test_nothing_is_scheduled_before_the_view_is_prepared_and_the_reason_shows() -> None:
    view, sink, clock = unbalanced(), Sink(), SteppedClock(NOW)
    svc = role_on(view, sink, clock).scheduling
    # the view came from storage: no region heard live yet
    for _ in range(5):
        clock.t += 1.0
        await svc.tick_once()
    assert sink.sent == []
    reason = svc.summary()["summary"]
    assert "waiting for the region view to catch up" in reason
    assert "0 of 19 regions" in reason
    assert "catch up" in svc.diagnose("balance-leader-scheduler")["summary"]

    # 17 of 19 heard (89%): still below PD's 90%
    for r in list(view.tree)[:17]:
        svc.on_region_heartbeat(r, r)
    clock.t += 1.0
    await svc.tick_once()
    assert sink.sent == []
    assert "17 of 19 regions" in svc.summary()["summary"]

    for r in list(view.tree)[17:]:
        svc.on_region_heartbeat(r, r)
    clock.t += 1.0
    await svc.tick_once()
    assert svc.prepare.prepared
    assert sink.sent, "prepared: balance-leader moves leaders off store 1"
    assert "catch up" not in svc.summary()["summary"]


async def test_synced_regions_count_as_heard_so_an_in_sync_follower_is_prepared() -> None:
    view, sink, clock = unbalanced(), Sink(), SteppedClock(NOW)
    svc = role_on(view, sink, clock).scheduling
    synced = RegionTree()
    for r in view.tree:
        assert apply_synced(synced, r, svc) is not None
    clock.t += 1.0
    await svc.tick_once()
    assert svc.prepare.prepared
    assert sink.sent


def test_prepare_checker_per_store_rule_and_timeout() -> None:
    base = cluster(
        [store(1), store(2), store(3), store(4)],
        [region(i, [1, 2, 3]) for i in range(1, 11)] + [region(11, [4, 2, 3], 4)],
    )
    checker = PrepareChecker()
    assert not checker.check(base, NOW)  # not held
    checker.taken(NOW)
    for rid in range(1, 11):
        checker.heard_from(rid)
    # 10 of 11 (91%) overall, but store 4's one region was never heard
    assert not checker.check(base, NOW + 1)
    assert "store 4: 0 of its 1 regions" in checker.reason
    assert checker.check(base, NOW + COLLECT_TIMEOUT_S), "after 5 minutes it schedules anyway"
    checker.lost()
    checker.taken(NOW + 400)
    assert not checker.check(base, NOW + 401), "a new term checks again"
    checker.heard_from(11)
    assert checker.check(base, NOW + 402)


def test_a_synced_copy_without_sizes_keeps_the_sizes_it_replaces() -> None:
    tree = RegionTree()
    heard = region(1, [1, 2, 3], size=64)
    tree.put(heard)
    synced = heard.with_(approximate_size=0, approximate_keys=0)
    applied = apply_synced(tree, synced)
    assert applied is not None
    kept = tree.get(1)
    assert kept is not None and (kept.approximate_size, kept.approximate_keys) == (64, 640_000)
    older = region(1, [1, 2, 3], ver=0)
    assert apply_synced(tree, older) is None, "an older copy changes nothing"
    assert tree.get(1) == kept


@dataclass
class LeaderNode:
    """What StoreFeed reads of the pd-leader's node."""

    tree: RegionTree
    cluster_id: int = 7

    def stores(self) -> list[Any]:
        return []


@pytest.fixture
async def leader_feed() -> Any:
    tree = RegionTree()
    for i in range(1, 4):
        tree.put(region(i, [1, 2, 3], size=32 + i))
    server = grpc.aio.server()
    kubepdpb_pb2_grpc.add_LeaderServicer_to_server(
        StoreFeed(LeaderNode(tree), lambda: True), server
    )  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)


async def test_sizes_after_a_takeover(leader_feed: grpc.aio.Channel) -> None:
    """A follower's view from the region sync has no sizes; it reads them from the
    pd-leader, and a synced update keeps them, so on takeover it schedules on them."""
    follower = RegionTree()
    for i in range(1, 4):
        apply_synced(follower, region(i, [1, 2, 3], size=0).with_(approximate_keys=0))
    assert [r.approximate_size for r in follower] == [0, 0, 0]
    await read_region_sizes(leader_feed, 7, follower)
    assert [r.approximate_size for r in follower] == [33, 34, 35]
    moved = region(2, [1, 2, 3], leader=2, size=0).with_(approximate_keys=0)
    apply_synced(follower, moved)  # a leader change synced later carries no sizes either
    after = follower.get(2)
    assert after is not None and after.leader_store_id == 2 and after.approximate_size == 34


class Catalog:
    closed = False

    def close(self) -> None:
        self.closed = True


async def test_kubernetes_policies_use_the_roles_one_service_behind_the_prepared_gate() -> None:
    """SchedulingPolicy objects run in the role's cluster-scoped policy service: not
    before the view is prepared, and failures reach the object's events."""
    view, sink, clock = unbalanced(), Sink(), SteppedClock(NOW)
    role = SchedulerRole(view, sink, clock, catalog=Catalog(), tick_s=0.05)
    resources = SchedulingPolicyResources(
        cast(KubeClient, None), "ns", "c", role, cast("WasmHost", None)
    )
    assert resources.service is role.policies
    service = role.policies
    assert service is not None
    policy = LoadedPolicy(
        PolicySpec.parse({"name": "p", "module": b"\0asm", "interval_s": 1.0}),
        Module([Proposal(ProposalKind.TRANSFER_LEADER, 1, 1, 1, 0, 2, "p")]),
    )
    service.put(policy)
    assert role.active() and not service.active(), "held, but the view is not prepared yet"
    proposals = ProposeService(role, lambda: 7)
    request = kubepdpb_pb2.ProposeRequest(
        cluster_id=7,
        policy="q",
        store_id=1,
        proposals=[
            kubepdpb_pb2.Proposal(kind=1, region_id=1, conf_ver=1, version=1, target_store=2)
        ],
    )
    refused = await proposals.Propose(request, None)
    assert [(v.accepted, v.reason) for v in refused.verdicts] == [
        (False, f"not scheduling yet: {role.scheduling.prepare.reason}")
    ]
    assert "catch up" in role.scheduling.prepare.reason and not sink.sent
    for r in view.tree:
        role.scheduling.on_region_heartbeat(r, r)
    assert service.active()
    await service.run_once(policy)
    assert policy.accepted == 1 and sink.sent
    admitted = await proposals.Propose(request, None)
    assert [v.reason for v in admitted.verdicts] == [
        "region 1 already has operator transfer-leader"
    ], "judged, not refused unheard"

    warned: list[tuple[str, str]] = []
    resources.objects["p"] = {"metadata": {"name": "p"}}
    resources.events = cast(
        EventRecorder, SimpleNamespace(warn=lambda o, r, m: warned.append((r, m)))
    )
    service._failed(policy, PolicyFailure(FailureKind.TRAP, "unreachable", 1.0))
    assert warned == [
        ("PolicyTrapped", "trap: unreachable"),
        ("PolicyDisabled", "failureStrategy Disable stopped it"),  # the default strategy
    ]


def test_a_synced_view_keeps_traffic_and_a_holder_of_it_sees_hot_regions() -> None:
    """The pd-leader's sync carries each region's traffic: a follower or the scheduler
    host keeps it (with the sizes it had) and its hot statistics come from it."""
    view, sink, clock = unbalanced(), Sink(), SteppedClock(NOW)
    svc = role_on(view, sink, clock).scheduling
    heard = view.tree.get(1)
    assert heard is not None and heard.flow == NO_FLOW
    busy = heard.with_(
        epoch=RegionEpoch(1, 2),
        approximate_size=0,  # what the leader's copy would say: the sync carries no sizes
        flow=FlowStats(bytes_written=6_000_000, bytes_read=600_000, keys_written=900, keys_read=90),
    )
    batch = pdpb_pb2.SyncRegionResponse()
    codec.sync_batch_to_pb([busy], batch)
    [synced] = codec.regions_from_sync(
        pdpb_pb2.SyncRegionResponse.FromString(batch.SerializeToString())
    )
    applied = apply_synced(view.tree, synced, svc)
    assert applied is not None
    kept = view.tree.get(1)
    assert kept is not None and kept.approximate_size == heard.approximate_size
    assert kept.flow == FlowStats(6_000_000, 600_000, 900, 90, interval_s=SYNCED_FLOW_INTERVAL_S)
    assert kept.leader == heard.leader and kept.epoch == RegionEpoch(1, 2)
    svc.on_region_heartbeat(*applied)
    hot = svc.coordinator.hot[1]
    assert hot.write_bytes > 0 and hot.write_keys == 900 / SYNCED_FLOW_INTERVAL_S
