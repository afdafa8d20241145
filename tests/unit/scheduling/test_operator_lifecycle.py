"""An operator's life before and between its steps: it starts only when a step reached
its leader's stream, expires when none did (PD's 3 s), and re-sends each step on the
step's cadence (2 s fast, 5 s for snapshots)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from pdcore.domain.commands import ChangePeer, RegionCommand, TransferLeader
from pdcore.domain.region import Region, RegionEpoch
from pdcore.scheduling.cluster import MemoryCluster
from pdcore.scheduling.controller import FAST_RESEND_S, SLOW_RESEND_S, OperatorController
from pdcore.scheduling.operator import (
    CREATED_EXPIRE_S,
    Operator,
    OpKind,
    OpStatus,
    move_peer,
    transfer_leader,
)
from pdcore.scheduling.steps import MergeStep
from pdcore.service.scheduling import SchedulingService
from tests.support.clocks import SteppedClock
from tests.unit.scheduling.helpers import NOW, cluster, region, store

EXPIRY = CREATED_EXPIRE_S + FAST_RESEND_S  # one re-send's grace after PD's expiry


def setup() -> tuple[OperatorController, MemoryCluster, Region]:
    c = cluster([store(i) for i in (1, 2, 3, 4)], [region(1, [1, 2, 3]), region(2, [1, 2, 3])])
    r = c.tree.get(1)
    assert r is not None
    return OperatorController(c), c, r


def test_an_operator_whose_steps_are_never_delivered_expires_unstarted() -> None:
    ctrl, _, r = setup()
    op = transfer_leader(r, 2, "test")
    assert ctrl.add(op, NOW) is None
    assert ctrl.dispatch(r, NOW, force=True)  # attempted, never reported delivered
    assert ctrl.tick(NOW + EXPIRY - 0.1)  # re-sent within the grace, still waiting
    assert op.status == OpStatus.CREATED and op.started_at == 0.0
    assert ctrl.tick(NOW + EXPIRY + 0.1) == []
    assert op.status == OpStatus.EXPIRED and "no step was delivered" in op.end_reason
    assert 1 not in ctrl.running and ctrl.count(OpKind.LEADER) == 0


def test_a_delivered_operator_never_expires_and_runs_to_its_timeout() -> None:
    ctrl, _, r = setup()
    op = transfer_leader(r, 2, "test")
    ctrl.add(op, NOW)
    ctrl.dispatch(r, NOW, force=True)
    ctrl.delivered(1, NOW + 0.5)
    assert (op.status, op.started_at) == (OpStatus.STARTED, NOW + 0.5)
    ctrl.delivered(1, NOW + 1.5)  # later deliveries do not restart it
    assert op.started_at == NOW + 0.5
    ctrl.tick(NOW + EXPIRY + 10)
    assert op.status == OpStatus.STARTED


def test_a_leaderless_regions_operator_expires_without_sending() -> None:
    ctrl, c, r = setup()
    op = transfer_leader(r, 2, "test")
    ctrl.add(op, NOW)
    c.tree.put(r.with_(leader=None))
    assert ctrl.tick(NOW + 1) == []  # nobody to send to
    ctrl.tick(NOW + EXPIRY + 0.1)
    assert op.status == OpStatus.EXPIRED


def test_a_merge_target_waiting_for_its_source_does_not_expire() -> None:
    ctrl, c, _ = setup()
    target = c.tree.get(2)
    assert target is not None
    passive = Operator(
        desc="merge-region",
        region_id=2,
        epoch=target.epoch,
        kind=OpKind.MERGE,
        steps=[MergeStep(1, target, passive=True)],
        reason="target of merging region 1",
    )
    assert ctrl.add(passive, NOW) is None
    assert ctrl.tick(NOW + EXPIRY + 10) == []
    assert passive.status == OpStatus.CREATED and 2 in ctrl.running


@pytest.mark.parametrize("slow", [False, True])
def test_each_step_is_re_sent_on_its_cadence(slow: bool) -> None:
    """Transfer-leader (fast) every 2 s; add-learner (a snapshot: slow) every 5 s; never
    more often however many heartbeats and ticks come in between."""
    ctrl, _, r = setup()
    op = move_peer(r, 3, 4, 999, "test") if slow else transfer_leader(r, 2, "test")
    interval = SLOW_RESEND_S if slow else FAST_RESEND_S
    assert ctrl.add(op, NOW) is None
    (first,) = ctrl.dispatch(r, NOW, force=True)
    assert isinstance(first[1].body, ChangePeer if slow else TransferLeader)
    ctrl.delivered(1, NOW)
    sent_at = [NOW]
    t = NOW
    while t < NOW + 4 * interval:
        t = round(t + 0.25, 2)
        sends = ctrl.dispatch(r, t) + ctrl.tick(t)  # a heartbeat and a tick each time
        if sends:
            assert [s[1] for s in sends] == [first[1]]  # the same command again
            sent_at.append(t)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(gaps) >= 3 and all(interval <= g <= interval + 0.25 for g in gaps), gaps


def test_a_step_that_advances_is_sent_at_once_not_on_the_old_cadence() -> None:
    ctrl, _, r = setup()
    op = move_peer(r, 3, 4, 999, "test")
    ctrl.add(op, NOW)
    ((_, learner),) = ctrl.dispatch(r, NOW, force=True)
    assert isinstance(learner.body, ChangePeer)
    added = r.with_(peers=(*r.peers, learner.body.peer))
    added = added.with_(epoch=RegionEpoch(r.epoch.conf_ver + 1, r.epoch.version))
    # 0.5 s later, well inside the add-learner's 5 s: the next step goes out now.
    ((_, nxt),) = ctrl.dispatch(added, NOW + 0.5)
    assert nxt.body != learner.body


@dataclass
class Sink:
    connected: set[int]
    sent: list[tuple[int, RegionCommand]] = field(default_factory=list)

    def send(self, store_id: int, command: RegionCommand) -> bool:
        if store_id not in self.connected:
            return False
        self.sent.append((store_id, command))
        return True


class View(MemoryCluster):
    async def alloc_id(self, count: int = 1) -> int:
        return 5000

    async def bury_empty_offline_stores(self) -> list[int]:
        return []


def service(connected: set[int]) -> tuple[SchedulingService, Sink, SteppedClock]:
    base = cluster([store(i) for i in (1, 2, 3)], [region(1, [1, 2, 3], leader=1)])
    view = View(base.tree, base.config, base.store_map)
    sink, clock = Sink(connected), SteppedClock(NOW)
    return SchedulingService(view, sink, clock, view.config), sink, clock


def test_a_command_the_sink_could_not_deliver_leaves_the_operator_unstarted() -> None:
    svc, _, clock = service(connected=set())  # no stream from store 1's TiKV
    op, problem = svc.add_operator("transfer-leader", 1, {"to_store_id": 2})
    assert op is not None and not problem
    assert op.status == OpStatus.CREATED and svc.undelivered == 1 and svc.sent == 0
    clock.t = NOW + EXPIRY + 0.1
    svc._deliver(svc.coordinator.controller.tick(clock.t))
    assert op.status == OpStatus.EXPIRED


def test_a_delivered_command_starts_the_operator() -> None:
    svc, sink, _ = service(connected={1})
    op, _ = svc.add_operator("transfer-leader", 1, {"to_store_id": 2})
    assert op is not None and op.status == OpStatus.STARTED and op.started_at == NOW
    assert [s for s, _ in sink.sent] == [1] and svc.sent == 1
