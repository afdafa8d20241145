"""Property: whatever happens to a region while an operator runs on it — steps applied,
heartbeats lost or repeated, the region changed underneath, time passing — the operator
ends in a legal state, and SUCCESS means the region really has the target peers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pdcore.domain.commands import ChangePeer, ChangePeerV2, ConfChangeType, TransferLeader
from pdcore.domain.region import Peer
from pdcore.scheduling.controller import OperatorController, Send
from pdcore.scheduling.operator import OpStatus, move_peer
from pdsim.model import SimRegion
from tests.unit.scheduling.helpers import NOW, cluster, store

# apply: TiKV applies the last command and reports; drop: a change happens (the command
# applies) but its heartbeat is lost; repeat: the last heartbeat arrives twice.
EVENTS = st.lists(
    st.sampled_from(["apply", "apply", "apply", "drop", "repeat", "split", "tick", "wait"]),
    max_size=40,
)


def apply(r: SimRegion, body: object) -> None:
    """What TiKV does with a command (the simulator's rules)."""
    if isinstance(body, ChangePeer):
        if body.change_type == ConfChangeType.ADD_LEARNER_NODE and r.add_learner(body.peer):
            r.pending.clear()  # the snapshot arrives
        elif body.change_type == ConfChangeType.ADD_NODE:
            r.promote(body.peer.store_id)
        elif body.change_type == ConfChangeType.REMOVE_NODE:
            r.remove(body.peer.store_id)
    elif isinstance(body, ChangePeerV2):
        if body.changes:
            r.enter_joint(
                [c.peer.store_id for c in body.changes if c.change_type == ConfChangeType.ADD_NODE],
                [c.peer.store_id for c in body.changes if c.change_type != ConfChangeType.ADD_NODE],
            )
        else:
            r.leave_joint()
    elif isinstance(body, TransferLeader):
        p = r.peer_on(body.peer.store_id)
        if p is not None and p.role == 0:
            r.leader_id = p.id


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.booleans(), st.booleans())
def test_operator_state_machine(events: list[str], joint: bool, leader_moves: bool) -> None:
    c = cluster([store(i) for i in (1, 2, 3, 4)], [])
    sim = SimRegion(
        1,
        b"a",
        b"b",
        [Peer(11, 1), Peer(12, 2), Peer(13, 3)],
        leader_id=11 if leader_moves else 12,
        conf_ver=3,
        version=1,
    )
    c.tree.put(sim.to_region())
    ctrl = OperatorController(c)
    op = move_peer(c.tree.get(1), 1, 4, 99, "prop", joint=joint)  # type: ignore[arg-type]
    assert ctrl.add(op, NOW) is None
    now = NOW

    def sent(sends: list[Send]) -> list[Send]:
        """Every command reaches the leader's stream (the service reports it)."""
        for _, cmd in sends:
            ctrl.delivered(cmd.region_id, now)
        return sends

    pending = sent(ctrl.dispatch(c.tree.get(1), now, force=True))  # type: ignore[arg-type]
    for ev in events:
        if op.status.finished:
            break
        if ev in ("apply", "drop") and pending:
            _, cmd = pending[-1]
            if cmd.epoch == sim.epoch():
                apply(sim, cmd.body)
        elif ev == "split":
            sim.version += 1
            sim.end = b"az"
        elif ev == "wait":
            now += 30
        if ev == "tick":
            pending = sent(ctrl.tick(now))
            continue
        if ev == "drop":
            continue  # PD never hears of this change
        region = sim.to_region()
        c.tree.put(region)
        pending = sent(ctrl.dispatch(region, now))
        if ev == "repeat":
            c.tree.put(region)
            pending = sent(ctrl.dispatch(region, now)) or pending
        # Safety whatever happens: a majority of the voters is always there.
        assert sum(1 for p in sim.peers if p.role == 0) >= 2
    if op.status == OpStatus.SUCCESS:
        stores = {p.store_id for p in sim.peers}
        assert stores == {2, 3, 4} and all(p.role == 0 for p in sim.peers)
    elif op.status.finished:
        assert op.status in {OpStatus.CANCELED, OpStatus.TIMEOUT}, op.status
        assert op.end_reason, "a cancelled or timed-out operator says why"
    if op.status.finished:
        assert 1 not in ctrl.running and ctrl.dispatch(sim.to_region(), now) == []
    else:
        assert op.status in {OpStatus.CREATED, OpStatus.STARTED}
        assert sim.version == 1  # a split always cancels a move


def test_the_property_reaches_success_when_every_step_applies() -> None:
    """Guard against a vacuous property: applying every step does finish the move."""
    c = cluster([store(i) for i in (1, 2, 3, 4)], [])
    sim = SimRegion(
        1, b"a", b"b", [Peer(11, 1), Peer(12, 2), Peer(13, 3)], leader_id=11, conf_ver=3, version=1
    )
    c.tree.put(sim.to_region())
    ctrl = OperatorController(c)
    op = move_peer(c.tree.get(1), 1, 4, 99, "prop")  # type: ignore[arg-type]
    ctrl.add(op, NOW)
    pending = ctrl.dispatch(sim.to_region(), NOW, force=True)
    for _ in range(10):
        for _, cmd in pending:
            apply(sim, cmd.body)
        c.tree.put(sim.to_region())
        pending = ctrl.dispatch(sim.to_region(), NOW)
    assert op.status == OpStatus.SUCCESS
