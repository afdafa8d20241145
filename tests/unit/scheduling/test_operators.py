"""Operator state machines, the controller's limits, re-sends, timeouts and cancels."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pdcore.domain.commands import ChangePeer, ChangePeerV2, TransferLeader
from pdcore.domain.region import Peer, PeerRole, RegionEpoch
from pdcore.scheduling.controller import OperatorController
from pdcore.scheduling.limits import TokenBucket
from pdcore.scheduling.operator import OpKind, OpStatus, Priority, move_peer, transfer_leader
from tests.unit.scheduling.helpers import NOW, cluster, region, store


def setup() -> tuple[OperatorController, object]:
    c = cluster([store(i) for i in (1, 2, 3, 4)], [region(1, [1, 2, 3])])
    return OperatorController(c), c


def test_transfer_leader_sent_then_finished_by_heartbeat() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    op = transfer_leader(r, 2, "test")
    assert ctrl.add(op, NOW) is None
    sends = ctrl.dispatch(r, NOW, force=True)
    assert len(sends) == 1 and sends[0][0] == 1 and isinstance(sends[0][1].body, TransferLeader)
    assert sends[0][1].epoch == r.epoch and op.status == OpStatus.CREATED  # not delivered yet
    ctrl.delivered(1, NOW)
    assert op.status == OpStatus.STARTED and op.started_at == NOW
    assert ctrl.dispatch(r, NOW + 0.5) == []  # no re-send before 2 s
    assert len(ctrl.dispatch(r, NOW + 2.5)) == 1  # re-sent
    moved = r.with_(leader=r.peer_on(2))
    assert ctrl.dispatch(moved, NOW + 3) == [] and op.status == OpStatus.SUCCESS
    assert 1 not in ctrl.running and ctrl.get(1) is op


def test_move_peer_walks_every_step_with_joint_consensus() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    op = move_peer(r, 3, 4, 999, "test")
    assert ctrl.add(op, NOW) is None
    ((_, cmd),) = ctrl.dispatch(r, NOW, force=True)
    assert isinstance(cmd.body, ChangePeer) and cmd.body.peer == Peer(999, 4, PeerRole.LEARNER)
    learner = r.with_(peers=(*r.peers, Peer(999, 4, PeerRole.LEARNER)), epoch=RegionEpoch(2, 1))
    ((_, cmd),) = ctrl.dispatch(learner, NOW + 10)
    assert isinstance(cmd.body, ChangePeerV2) and len(cmd.body.changes) == 2
    joint = learner.with_(
        peers=(
            r.peers[0],
            r.peers[1],
            Peer(301, 3, PeerRole.DEMOTING_VOTER),
            Peer(999, 4, PeerRole.INCOMING_VOTER),
        ),
        epoch=RegionEpoch(3, 1),
    )
    ((_, cmd),) = ctrl.dispatch(joint, NOW + 11)
    assert isinstance(cmd.body, ChangePeerV2) and cmd.body.changes == ()
    left = joint.with_(
        peers=(r.peers[0], r.peers[1], Peer(301, 3, PeerRole.LEARNER), Peer(999, 4)),
        epoch=RegionEpoch(4, 1),
    )
    ((_, cmd),) = ctrl.dispatch(left, NOW + 12)
    assert isinstance(cmd.body, ChangePeer) and cmd.body.peer.store_id == 3
    done = left.with_(peers=(r.peers[0], r.peers[1], Peer(999, 4)), epoch=RegionEpoch(5, 1))
    assert ctrl.dispatch(done, NOW + 13) == [] and op.status == OpStatus.SUCCESS


def test_changed_region_cancels_the_operator() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    op = transfer_leader(r, 2, "test")
    ctrl.add(op, NOW)
    split = r.with_(epoch=RegionEpoch(1, 2), end_key=b"r000001x")
    assert ctrl.dispatch(split, NOW + 1) == []
    assert op.status == OpStatus.CANCELED and "version changed" in op.end_reason


def test_membership_changed_beyond_the_steps_cancels() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    op = transfer_leader(r, 2, "test")
    ctrl.add(op, NOW)
    assert ctrl.dispatch(r.with_(epoch=RegionEpoch(2, 1)), NOW + 1) == []
    assert op.status == OpStatus.CANCELED


def test_step_timeout() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    op = transfer_leader(r, 2, "test")
    ctrl.add(op, NOW)
    ctrl.dispatch(r, NOW, force=True)
    ctrl.delivered(1, NOW)
    assert ctrl.tick(NOW + 59) != [] and op.status == OpStatus.STARTED  # re-sent, still going
    ctrl.tick(NOW + 61)
    assert op.status == OpStatus.TIMEOUT and "timed out" in op.end_reason


def test_stale_operator_refused_and_priority_replaces() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    stale = transfer_leader(r.with_(epoch=RegionEpoch(0, 1)), 2, "old view")
    assert "epoch changed" in (ctrl.add(stale, NOW) or "")
    low = transfer_leader(r, 2, "low")
    assert ctrl.add(low, NOW) is None
    same = transfer_leader(r, 3, "same priority")
    assert "already has operator" in (ctrl.add(same, NOW) or "")
    high = transfer_leader(r, 3, "urgent", priority=Priority.URGENT)
    assert ctrl.add(high, NOW) is None and low.status == OpStatus.REPLACED


def test_leader_schedule_limit() -> None:
    c = cluster(
        [store(i) for i in (1, 2, 3)],
        [region(i, [1, 2, 3]) for i in range(1, 7)],
        leader_schedule_limit=4,
    )
    ctrl = OperatorController(c)
    results = [ctrl.add(transfer_leader(c.tree.get(i), 2, "t"), NOW) for i in range(1, 7)]  # type: ignore[arg-type]
    assert results[:4] == [None] * 4
    assert all("leader schedule limit" in (x or "") for x in results[4:])


def test_store_limit_refills_per_minute() -> None:
    c = cluster(
        [store(i) for i in (1, 2, 3, 4)],
        [region(i, [1, 2, 3], size=96) for i in range(1, 10)],
        store_limit_add_peer=15.0,
    )
    ctrl = OperatorController(c)
    first = ctrl.add(move_peer(c.tree.get(1), 3, 4, 901, "t"), NOW)  # type: ignore[arg-type]
    second = ctrl.add(move_peer(c.tree.get(2), 3, 4, 902, "t"), NOW)  # type: ignore[arg-type]
    assert first is None and "store 4 add-peer limit exceeded" in (second or "")
    # 15 per minute: one token every 4 s.
    assert ctrl.add(move_peer(c.tree.get(2), 3, 4, 902, "t"), NOW + 4.1) is None  # type: ignore[arg-type]


def test_a_store_limit_changed_in_the_config_applies_at_once() -> None:
    c = cluster(
        [store(i) for i in (1, 2, 3, 4)],
        [region(i, [1, 2, 3], size=96) for i in range(1, 10)],
        store_limit_add_peer=15.0,
    )
    ctrl = OperatorController(c)
    assert ctrl.add(move_peer(c.tree.get(1), 3, 4, 901, "t"), NOW) is None  # type: ignore[arg-type]
    assert "limit exceeded" in (ctrl.add(move_peer(c.tree.get(2), 3, 4, 902, "t"), NOW) or "")  # type: ignore[arg-type]
    # POST /pd/api/v1/stores/limit {"rate": 600}: 10 a second from now on, not after a restart.
    c.config = replace(c.config, schedule=replace(c.config.schedule, store_limit_add_peer=600.0))
    assert ctrl.add(move_peer(c.tree.get(2), 3, 4, 902, "t"), NOW) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("per_minute", "cost", "elapsed", "ok"),
    [
        (15, 1.0, 0.0, False),
        (15, 0.2, 0.0, False),
        (15, 0.2, 0.81, True),
        (15, 1.0, 3.9, False),
        (15, 1.0, 4.01, True),
        (60, 1.0, 1.01, True),
    ],
)
def test_token_bucket(per_minute: float, cost: float, elapsed: float, ok: bool) -> None:
    b = TokenBucket(per_minute)
    assert b.available(cost, 0.0)
    b.take(1.0, 0.0)
    assert b.available(cost, elapsed) is ok


def test_admin_kind_skips_store_limits() -> None:
    ctrl, c = setup()
    r = c.tree.get(1)  # type: ignore[attr-defined]
    op = move_peer(r, 3, 4, 5, "admin", kind=OpKind.ADMIN)
    assert ctrl.add(op, NOW) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"hb_age": 4000}, "target store 4 is down"),
        ({"offline": True}, "target store 4 is going offline"),
        ({}, ""),
    ],
)
def test_operator_to_a_store_that_can_no_longer_take_it_is_cancelled(
    change: dict[str, object], why: str
) -> None:
    c = cluster([store(1), store(2), store(3), store(4)], [region(1, [1, 2, 3])])
    ctrl = OperatorController(c)
    r = c.tree.get(1)
    assert r is not None
    op = move_peer(r, 3, 4, 99, "test")
    ctrl.add(op, NOW)
    assert ctrl.dispatch(r, NOW, force=True) != []  # add-learner on store 4 sent
    ctrl.delivered(1, NOW)
    c.add_stores([store(4, **change)])  # type: ignore[arg-type]
    ctrl.tick(NOW + 6)
    if why:
        assert op.status == OpStatus.CANCELED and op.end_reason == why
        assert 1 not in ctrl.running  # the checkers may schedule the region again
    else:
        assert op.status == OpStatus.STARTED


def test_counts_and_influence_follow_the_running_operators() -> None:
    """The controller keeps per-kind counts and influence sums as operators come and go;
    they must always equal a fresh sum over `running`, also after a direct change."""
    c = cluster(
        [store(i) for i in (1, 2, 3, 4)],
        [region(i, [1, 2, 3]) for i in range(1, 9)],
        store_limit_add_peer=1000.0,
        store_limit_remove_peer=1000.0,
    )
    ctrl = OperatorController(c)

    def fresh() -> dict[int, tuple[int, ...]]:
        out: dict[int, list[int]] = {}
        for op in ctrl.running.values():
            for sid, inf in op.influence.items():
                t = out.setdefault(sid, [0] * 4)
                for i, v in enumerate(
                    (inf.region_size, inf.region_count, inf.leader_count, inf.add_peer)
                ):
                    t[i] += v
        return {s: tuple(v) for s, v in out.items() if any(v)}

    def cached() -> dict[int, tuple[int, ...]]:
        got = ctrl.influence()
        return {
            s: (i.region_size, i.region_count, i.leader_count, i.add_peer)
            for s, i in got.items()
            if (i.region_size, i.region_count, i.leader_count, i.add_peer) != (0, 0, 0, 0)
        }

    for i in range(1, 5):
        assert ctrl.add(transfer_leader(c.tree.get(i), 2, "t"), NOW) is None  # type: ignore[arg-type]
    for i in range(5, 9):
        op = move_peer(c.tree.get(i), 3, 4, 1000 + i, "m")  # type: ignore[arg-type]
        assert ctrl.add(op, NOW) is None
    assert cached() == fresh() and cached()[4][3] == 4
    assert ctrl.count(OpKind.LEADER) == 4 and ctrl.count(OpKind.REGION) == 4
    ctrl.cancel(5, NOW, "test")
    ctrl.cancel(1, NOW, "test")
    assert cached() == fresh() and cached()[4][3] == 3
    assert ctrl.count(OpKind.LEADER) == 3 and ctrl.count(OpKind.REGION) == 3
    ctrl.influence()[4].add_peer += 100  # callers get a copy
    assert cached()[4][3] == 3
    del ctrl.running[6]  # behind the controller's back: rebuilt on the next read
    assert cached() == fresh() and ctrl.count(OpKind.REGION) == 2
