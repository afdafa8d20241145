"""Scores, filters with reasons, the rule and merge checkers, and the schedulers on
hand-built clusters."""

from __future__ import annotations

import random

import pytest

from pdcore.domain.config import ScheduleConfig
from pdcore.domain.region import Peer, PeerRole, PeerStats, Region, RegionEpoch
from pdcore.scheduling import filters
from pdcore.scheduling.checkers import CheckContext, MergeChecker, RuleChecker
from pdcore.scheduling.controller import OperatorController
from pdcore.scheduling.coordinator import Coordinator
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.rules import LabelConstraint, Rule, default_rules
from pdcore.scheduling.schedulers.balance_leader import BalanceLeader
from pdcore.scheduling.schedulers.balance_region import BalanceRegion
from pdcore.scheduling.schedulers.base import SchedContext
from pdcore.scheduling.schedulers.evict_leader import EvictLeader
from pdcore.scheduling.scores import distinct_score, is_low_space, region_score
from pdcore.scheduling.steps import (
    AddLearnerStep,
    JointLeaveStep,
    MergeStep,
    PromoteLearnerStep,
    RemovePeerStep,
    TransferLeaderStep,
)
from tests.unit.scheduling.helpers import NOW, cluster, id_source, region, store


def ctx_for(c: object) -> SchedContext:
    return SchedContext(c, OperatorController(c), NOW, random.Random(1), id_source())  # type: ignore[arg-type]


def check_ctx(c: object, rules: list[Rule] | None = None) -> CheckContext:
    return CheckContext(c, rules or default_rules(c.config.replication), NOW, id_source())  # type: ignore[attr-defined, arg-type]


# -- scores and filters -------------------------------------------------------------------
def test_region_score_grows_as_space_runs_out() -> None:
    cfg = ScheduleConfig()
    c = cluster(
        [store(1), store(2, available_gib=100), store(3, available_gib=10)],
        [region(1, [1, 2, 3], size=1000)],
    )
    roomy, tight, full = (region_score(c.tree, c.get_store(i), cfg) for i in (1, 2, 3))  # type: ignore[arg-type]
    assert roomy < tight < full
    assert is_low_space(c.get_store(3), cfg, 1000) and not is_low_space(c.get_store(1), cfg, 1000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"hb_age": 30}, "disconnected"),
        ({"hb_age": 4000}, "down"),
        ({"offline": True}, "offline"),
        ({}, ""),
    ],
)
def test_leader_target_filter_says_why(kw: dict[str, object], reason: str) -> None:
    s = store(1, **kw)  # type: ignore[arg-type]
    got = filters.leader_target(s, NOW, ScheduleConfig(), set())
    assert (reason in got) if reason else got == ""


def test_distinct_score_prefers_other_zones() -> None:
    a, b, c = store(1, zone="z1"), store(2, zone="z1"), store(3, zone="z2")
    assert distinct_score(("zone",), c, [a]) > distinct_score(("zone",), b, [a])


# -- rule checker ----------------------------------------------------------------------------
def test_missing_replica_added_in_another_zone() -> None:
    stores = [store(1, zone="z1"), store(2, zone="z2"), store(3, zone="z1"), store(4, zone="z3")]
    c = cluster(stores, [region(1, [1, 2])], location_labels=("zone",))
    op, why = RuleChecker().check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert (
        op is not None and isinstance(op.steps[0], AddLearnerStep) and op.steps[0].to_store == 4
    ), why


def test_down_peer_is_replaced_offline_peer_too() -> None:
    stores = [store(1), store(2), store(3, hb_age=4000), store(4)]
    c = cluster(stores, [region(1, [1, 2, 3])])
    op, _ = RuleChecker().check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert op is not None and op.desc == "replace-rule-down-peer"
    assert any(isinstance(s, RemovePeerStep) and s.from_store == 3 for s in op.steps)
    c2 = cluster([store(1), store(2), store(3, offline=True), store(4)], [region(1, [1, 2, 3])])
    op2, _ = RuleChecker().check(check_ctx(c2), c2.tree.get(1))  # type: ignore[arg-type]
    assert op2 is not None and op2.desc == "replace-rule-offline-peer"


def test_extra_replica_removed_and_fit_region_left_alone() -> None:
    c = cluster([store(i) for i in range(1, 5)], [region(1, [1, 2, 3, 4]), region(2, [1, 2, 3])])
    op, _ = RuleChecker().check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert op is not None and op.desc == "remove-peer"
    none, why = RuleChecker().check(check_ctx(c), c.tree.get(2))  # type: ignore[arg-type]
    assert none is None and why == "region fits its rules"


def test_label_constraint_rule_places_the_learner() -> None:
    stores = [
        store(1, zone="z1"),
        store(2, zone="z2"),
        store(3, zone="z3"),
        store(4, zone="tiflash"),
    ]
    rules = [
        Rule(count=3),
        Rule(
            id="learner",
            role="learner",
            count=1,
            label_constraints=(LabelConstraint("zone", "in", ("tiflash",)),),
        ),
    ]
    c = cluster(stores, [region(1, [1, 2, 3])])
    op, _ = RuleChecker().check(check_ctx(c, rules), c.tree.get(1))  # type: ignore[arg-type]
    assert op is not None and op.steps[0].to_store == 4 and len(op.steps) == 1  # type: ignore[union-attr]


def test_down_peer_reported_by_the_leader_is_replaced() -> None:
    r = region(1, [1, 2, 3])
    r = r.with_(down_peers=(PeerStats(r.peer_on(3), 4000),))  # type: ignore[arg-type]
    c = cluster([store(i) for i in range(1, 5)], [])
    c.tree.put(r)
    op, _ = RuleChecker().check(check_ctx(c), r)
    assert op is not None and op.desc == "replace-rule-down-peer"
    assert any(isinstance(s, AddLearnerStep) and s.to_store == 4 for s in op.steps)


def test_down_peer_is_replaced_by_the_orphan_learner_on_the_only_free_store() -> None:
    """Swarm seed 9 (makeup-down-replicas): a replace operator was lost after its learner
    on store 4 caught up; store 4 is the only store without a peer, so a new replica had
    nowhere to go and the region stayed on the dead store forever. PD promotes the
    orphan learner instead."""
    r = region(1, [1, 2, 3])
    r = r.with_(peers=(*r.peers, Peer(104, 4, PeerRole.LEARNER)))
    c = cluster([store(1), store(2), store(3, hb_age=4000), store(4)], [])
    c.tree.put(r)
    op, why = RuleChecker().check(check_ctx(c), r)
    assert op is not None, why
    assert op.desc == "replace-down-peer-with-orphan-peer"
    assert not any(isinstance(s, AddLearnerStep) for s in op.steps)  # no new snapshot
    assert any(isinstance(s, RemovePeerStep) and s.from_store == 3 for s in op.steps)
    # Swarm seed 14 (delete-nodes): the offline store holds the leader and every other
    # store already has a peer (two orphan learners of timed-out operators).
    r3 = region(3, [5, 1, 2]).with_(
        peers=(*region(3, [5, 1, 2]).peers, Peer(303, 3, PeerRole.LEARNER)),
    )
    c3 = cluster([store(1), store(2), store(3), store(5, offline=True)], [])
    c3.tree.put(r3)
    op3, why3 = RuleChecker().check(check_ctx(c3), r3)
    assert op3 is not None and op3.desc == "replace-down-peer-with-orphan-peer", why3
    assert isinstance(op3.steps[0], TransferLeaderStep) and op3.steps[0].from_store == 5
    # A learner still applying its snapshot is not promoted in a voter's place.
    c.tree.put(r.with_(pending_peers=(Peer(104, 4, PeerRole.LEARNER),)))
    op2, why2 = RuleChecker().check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert op2 is None or op2.desc != "replace-down-peer-with-orphan-peer", why2


# -- merge checker -----------------------------------------------------------------------------
def test_merge_small_neighbours_only_after_split_merge_interval() -> None:
    regions = [
        region(1, [1, 2, 3], size=5, start=b"a", end=b"b"),
        region(2, [1, 2, 3], size=5, start=b"b", end=b"c"),
    ]
    c = cluster([store(i) for i in (1, 2, 3)], regions, split_merge_interval_s=3600.0)
    early = MergeChecker(started_at=NOW - 10)
    assert early.check(check_ctx(c), c.tree.get(1))[0] == []  # type: ignore[arg-type]
    checker = MergeChecker(started_at=NOW - 7200)
    checker.split_at[2] = NOW - 60
    assert checker.check(check_ctx(c), c.tree.get(1))[0] == []  # type: ignore[arg-type]
    checker.split_at.clear()
    ops, _ = checker.check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert [type(o.steps[0]) for o in ops] == [MergeStep, MergeStep]
    assert ops[0].steps[0].passive is False and ops[1].steps[0].passive is True  # type: ignore[union-attr]


def test_merge_moves_the_source_onto_the_targets_stores_first() -> None:
    # PD's merge-region: a neighbour on other stores is matched by moving the source's
    # peers (the leader handed to a store that stays), then merged; the target waits.
    regions = [
        region(1, [1, 2, 3], leader=1, size=5, start=b"a", end=b"b"),
        region(2, [2, 3, 4], size=5, start=b"b", end=b"c"),
    ]
    c = cluster([store(i) for i in (1, 2, 3, 4)], regions, split_merge_interval_s=0.0)
    ops, why = MergeChecker(started_at=NOW).check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert len(ops) == 2, why
    src, dst = ops
    kinds = [type(s) for s in src.steps]
    assert kinds[0] is AddLearnerStep and src.steps[0].to_store == 4  # type: ignore[union-attr]
    assert TransferLeaderStep in kinds and kinds.index(TransferLeaderStep) < kinds.index(
        RemovePeerStep
    )
    move = src.steps[kinds.index(TransferLeaderStep)]
    assert (move.from_store, move.to_store) == (1, 2)  # type: ignore[union-attr]
    assert src.steps[kinds.index(RemovePeerStep)].from_store == 1  # type: ignore[union-attr]
    assert kinds[-1] is MergeStep and src.steps[-1].passive is False  # type: ignore[union-attr]
    assert src.influence[4].add_peer == 1 and src.influence[1].remove_peer == 1
    # The target's passive step outlasts the source's moves.
    wait = dst.steps[0]
    assert isinstance(wait, MergeStep) and wait.passive
    assert wait.timeout(5) >= sum(s.timeout(5) for s in src.steps[:-1])


def test_merge_of_one_replica_regions_hands_the_lead_to_the_new_peer() -> None:
    regions = [
        region(1, [1], size=5, start=b"a", end=b"b"),
        region(2, [2], size=5, start=b"b", end=b"c"),
    ]
    c = cluster([store(1), store(2)], regions, split_merge_interval_s=0.0, max_replicas=1)
    ops, why = MergeChecker(started_at=NOW).check(check_ctx(c), c.tree.get(1))  # type: ignore[arg-type]
    assert len(ops) == 2, why
    kinds = [type(s) for s in ops[0].steps]
    assert kinds == [
        AddLearnerStep,
        PromoteLearnerStep,
        TransferLeaderStep,
        RemovePeerStep,
        MergeStep,
    ]


def test_merge_prefers_a_neighbour_on_the_same_stores_and_skips_other_rules() -> None:
    regions = [
        region(1, [2, 3, 4], size=1, start=b"a", end=b"b"),
        region(2, [1, 2, 3], size=8, start=b"b", end=b"c"),
        region(3, [1, 2, 3], size=5, start=b"c", end=b"d"),
        region(4, [1, 2, 3], size=5, start=b"d", end=b"e"),
    ]
    c = cluster([store(i) for i in (1, 2, 3, 4)], regions, split_merge_interval_s=0.0)
    checker = MergeChecker(started_at=NOW)
    ops, _ = checker.check(check_ctx(c), c.tree.get(2))  # type: ignore[arg-type]
    # Region 1 is smaller but on other stores; region 3 needs no moves.
    assert [o.region_id for o in ops] == [2, 3] and len(ops[0].steps) == 1
    # A rule of its own on region 4's range: it merges with neither neighbour.
    own = Rule(group_id="pd", id="d-range", start_key=b"d", end_key=b"e", count=3)
    rules = [*default_rules(c.config.replication), own]
    ops, why = checker.check(check_ctx(c, rules), c.tree.get(4))  # type: ignore[arg-type]
    assert ops == [] and why == "no adjacent region to merge with"


def test_admin_merge_adds_source_and_target_or_neither() -> None:
    regions = [
        region(1, [1, 2, 3], size=5, start=b"a", end=b"b"),
        region(2, [2, 3, 4], size=5, start=b"b", end=b"c"),
        region(3, [1, 2], size=5, start=b"c", end=b"d"),
    ]
    c = cluster([store(i) for i in (1, 2, 3, 4)], regions)
    coord = Coordinator(c, id_source(), started_at=NOW, schedulers=())  # type: ignore[arg-type]
    op, problem, sends = coord.add_admin_operator("merge-region", 1, {"target_region_id": 2}, NOW)
    assert op is not None and problem == "" and sends
    running = coord.controller.running
    assert isinstance(running[1].steps[0], AddLearnerStep)
    assert isinstance(running[2].steps[0], MergeStep) and running[2].steps[0].passive
    # Three voters into two cannot be matched: refused, nothing added.
    op, problem, _ = coord.add_admin_operator("merge-region", 3, {"target_region_id": 2}, NOW)
    assert op is None and "same number of voters" in problem and 3 not in running


# -- schedulers ---------------------------------------------------------------------------------
def test_balance_leader_moves_toward_even() -> None:
    regions = [region(i, [1, 2, 3], leader=1) for i in range(1, 31)]
    c = cluster([store(1), store(2), store(3)], regions)
    diag = Diagnosis("balance-leader")
    ops = BalanceLeader().schedule(ctx_for(c), diag)
    assert len(ops) == 4 and all(o.steps[0].from_store == 1 for o in ops)  # type: ignore[union-attr]


def test_balance_leader_does_nothing_when_balanced_and_says_why() -> None:
    regions = [region(i, [1, 2, 3], leader=1 + i % 3) for i in range(1, 31)]
    c = cluster([store(1), store(2), store(3)], regions)
    diag = Diagnosis("balance-leader")
    assert BalanceLeader().schedule(ctx_for(c), diag) == []
    assert "tolerance" in diag.summary or any("tolerance" in p.reason for p in diag.plans)


def test_diagnosis_names_filtered_targets() -> None:
    regions = [region(i, [1, 2, 3], leader=1) for i in range(1, 31)]
    c = cluster([store(1), store(2, hb_age=30), store(3, hb_age=30)], regions)
    diag = Diagnosis("balance-leader")
    assert BalanceLeader().schedule(ctx_for(c), diag) == []
    assert any(p.stage == "target" and "disconnected" in p.reason for p in diag.plans)


def test_balance_region_respects_tolerance() -> None:
    full = [region(i, [1, 2, 3], size=96) for i in range(1, 41)]
    c = cluster([store(i) for i in (1, 2, 3, 4)], full)
    ops = BalanceRegion().schedule(ctx_for(c), Diagnosis("r"))
    assert len(ops) == 1 and any(
        isinstance(s, AddLearnerStep) and s.to_store == 4 for s in ops[0].steps
    )
    even = [region(i, [1 + i % 4, 1 + (i + 1) % 4, 1 + (i + 2) % 4], size=96) for i in range(1, 41)]
    c2 = cluster([store(i) for i in (1, 2, 3, 4)], even)
    assert BalanceRegion().schedule(ctx_for(c2), Diagnosis("r")) == []


def test_balance_region_never_moves_a_replica_where_a_rule_forbids_it() -> None:
    """Store 4 is nearly empty, but the rule keeps voters out of its zone: balancing must
    not undo what the rule checker does (PD's placement safeguard)."""
    stores = [store(1, zone="z1"), store(2, zone="z2"), store(3, zone="z3"), store(4, zone="z9")]
    full = [region(i, [1, 2, 3], size=96) for i in range(1, 41)]
    c = cluster(stores, full)
    assert BalanceRegion().schedule(ctx_for(c), Diagnosis("r"))  # without the rule it would
    ctx = ctx_for(c)
    ctx.rules = [Rule(count=3, label_constraints=(LabelConstraint("zone", "notIn", ("z9",)),))]
    diag = Diagnosis("r")
    assert BalanceRegion().schedule(ctx, diag) == []
    assert any("placement rules" in p.reason for p in diag.plans)


def test_evict_leader_empties_a_store() -> None:
    regions = [region(i, [1, 2, 3], leader=2) for i in range(1, 11)]
    c = cluster([store(1), store(2), store(3)], regions)
    ops = EvictLeader([2], batch=10).schedule(ctx_for(c), Diagnosis("e"))
    assert len(ops) == 10 and all(o.steps[0].to_store != 2 for o in ops)  # type: ignore[union-attr]


def test_coordinator_runs_schedulers_and_patrol() -> None:
    regions = [region(i, [1, 2, 3], leader=1) for i in range(1, 31)] + [region(50, [1, 2])]
    c = cluster([store(1), store(2), store(3), store(4)], regions)
    coord = Coordinator(
        c,
        id_source(),
        started_at=NOW,  # type: ignore[arg-type]
        schedulers=("balance-leader-scheduler",),
    )
    sends = coord.tick(NOW)
    kinds = {op.desc for op in coord.controller.running.values()}
    assert "transfer-leader" in kinds and "add-rule-peer" in kinds
    assert sends, "the first step of every new operator is sent at once"
    with pytest.raises(ValueError, match="unknown scheduler"):
        coord.add_scheduler("no-such", {})
    coord.add_scheduler("evict-leader-scheduler", {"store_id": 1})
    assert coord.evicted_stores() == {1}


def _joint(leader_store: int) -> Region:
    """Store 3 demoting, store 4 incoming: a move whose operator went away mid-change."""
    peers = (
        Peer(11, 1),
        Peer(12, 2),
        Peer(13, 3, PeerRole.DEMOTING_VOTER),
        Peer(14, 4, PeerRole.INCOMING_VOTER),
    )
    lead = next(p for p in peers if p.store_id == leader_store)
    return Region(9, b"a", b"b", RegionEpoch(5, 3), peers, leader=lead)


@pytest.mark.parametrize(("leader", "first"), [(1, JointLeaveStep), (3, TransferLeaderStep)])
def test_region_left_in_a_joint_state_leaves_it(leader: int, first: type) -> None:
    c = cluster([store(i) for i in range(1, 5)], [_joint(leader)])
    coord = Coordinator(c, id_source(), started_at=NOW, schedulers=())  # type: ignore[arg-type]
    sends = coord.tick(NOW)
    op = coord.controller.running.get(9)
    assert op is not None and op.desc == "leave-joint-state", coord.patrol.pending
    assert op.scheduler == "joint-state-checker" and sends
    assert isinstance(op.steps[0], first) and isinstance(op.steps[-1], JointLeaveStep)
    if first is TransferLeaderStep:
        assert op.steps[0].to_store in (1, 2)  # a full voter, never the demoting one
    leave = op.steps[-1]
    assert {p.store_id for p in leave.promote} == {4} and {p.store_id for p in leave.demote} == {3}


def test_stale_region_in_view_is_not_scheduled() -> None:
    r = Region(7, b"a", b"b", RegionEpoch(1, 1), (Peer(1, 1),), leader=Peer(1, 1))
    c = cluster([store(1), store(2), store(3)], [r])
    op, why = RuleChecker().check(check_ctx(c), r)
    assert op is not None and "missing 2 replicas" in op.reason, why


@pytest.mark.parametrize("dimension", ["byte", "key", "query"])
def test_hot_region_moves_a_hot_leader_on_any_dimension(dimension: str) -> None:
    from pdcore.scheduling.schedulers.base import HotStat
    from pdcore.scheduling.schedulers.hot_region import HotRegion

    regions = [region(i, [1, 2, 3], leader=1) for i in range(1, 5)] + [
        region(9, [2, 3, 4], leader=2)
    ]
    c = cluster([store(i) for i in (1, 2, 3, 4)], regions)
    ctx = ctx_for(c)
    rates = {"byte": "write_bytes", "key": "write_keys", "query": "write_query"}
    for rid in (1, 2, 3, 4):
        ctx.hot[rid] = HotStat(**{rates[dimension]: 10_000.0})  # type: ignore[arg-type]
    sched = HotRegion()
    sched.update_config({"write-priorities": [dimension]})
    ops = sched.schedule(ctx, Diagnosis("hot"))
    assert len(ops) == 1 and ops[0].steps[0].from_store == 1  # type: ignore[union-attr]
    assert ops[0].desc == "transfer-hot-write-leader"


def test_hot_region_counts_running_operators_and_stops_at_balance() -> None:
    """Passes in a row, before any operator finishes, move only what balance needs."""
    from pdcore.scheduling.schedulers.base import HotStat
    from pdcore.scheduling.schedulers.hot_region import HotRegion

    c = cluster(
        [store(i) for i in (1, 2, 3, 4)],
        [region(i, [1, 2, 3] if i % 2 else [1, 3, 4], leader=1) for i in range(1, 9)],
        hot_region_schedule_limit=10,
    )
    ctx = ctx_for(c)
    for rid in range(1, 9):
        ctx.hot[rid] = HotStat(read_bytes=16 * 1024 * 1024.0)
    sched = HotRegion()
    ops = []
    for _ in range(10):
        got = sched.schedule(ctx, Diagnosis("hot"))
        for op in got:
            assert ctx.controller.add(op, NOW) is None
        ops += got
    after = {sid: 0 for sid in (1, 2, 3, 4)}
    for r in c.tree:
        running = ctx.controller.running.get(r.id)
        after[running.steps[0].to_store if running else r.leader_store_id] += 1  # type: ignore[union-attr]
    assert len(ops) == 6 and sorted(after.values()) == [2, 2, 2, 2], after


def test_scheduler_config_is_validated() -> None:
    from pdcore.scheduling.schedulers.hot_region import HotRegion

    with pytest.raises(ValueError, match="write-priorities"):
        HotRegion().update_config({"write-priorities": ["cpu"]})
    with pytest.raises(ValueError, match="unknown"):
        BalanceLeader().update_config({"bach": 3})
    b = BalanceLeader()
    b.update_config({"batch": 8})
    assert b.config() == {"batch": 8}
