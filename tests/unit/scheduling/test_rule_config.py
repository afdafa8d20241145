"""Rule groups in the apply order, the whole-set check, and rules written as PD's JSON
changing what the rule checker does (through `PlacementRules`, as the HTTP API
writes them)."""

from __future__ import annotations

from typing import Any

import pytest

from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.config import ReplicationConfig
from pdcore.scheduling.checkers import CheckContext, RuleChecker
from pdcore.scheduling.coordinator import Coordinator
from pdcore.scheduling.operator import Operator
from pdcore.scheduling.rule_config import (
    INCONSISTENT,
    NOT_ONLY_DEFAULT,
    RuleError,
    RuleGroup,
    RuleSet,
    check_key_space,
    follow_replication,
    rule_from_json,
)
from pdcore.scheduling.rules import Rule, applied, default_rules
from pdcore.scheduling.steps import AddLearnerStep
from pdcore.service.placement_rules import PlacementRules
from tests.unit.scheduling.helpers import NOW, cluster, id_source, region, store


def ids(rules: list[Rule]) -> list[str]:
    return [f"{r.group_id}/{r.id}" for r in rules]


@pytest.mark.parametrize(
    ("groups", "in_force"),
    [
        ((), ["a/1", "a/2", "b/1"]),
        ((RuleGroup("b", index=1, override=True),), ["b/1"]),
        ((RuleGroup("a", index=5),), ["b/1", "a/1", "a/2"]),  # a group's index orders it
        ((RuleGroup("a", index=5, override=True),), ["a/1", "a/2"]),
    ],
)
def test_groups_order_and_override(groups: tuple[RuleGroup, ...], in_force: list[str]) -> None:
    rules = [Rule("a", "1"), Rule("a", "2", index=1), Rule("b", "1")]
    assert ids(applied(RuleSet.of(rules, groups).rules_in_force())) == in_force


def test_a_rule_override_drops_earlier_rules_of_its_group_only() -> None:
    rules = [Rule("a", "1"), Rule("b", "1"), Rule("b", "2", index=1, override=True)]
    assert ids(applied(rules)) == ["a/1", "b/2"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "no rule left"),
        ([Rule(start_key=b"a")], "no rule for range {, 61}"),
        ([Rule(end_key=b"a")], "no rule for range {61, }"),
        ([Rule(end_key=b"a"), Rule(id="x", start_key=b"b")], "no rule for range {61, 62}"),
        ([Rule(role="learner", count=1)], "needs at least one leader or voter for range {, }"),
        ([Rule(role="follower", count=3)], "needs at least one leader or voter for range {, }"),
        (
            [Rule(count=2), Rule(id="l", role="leader", count=1, start_key=b"m", end_key=b"n")],
            "",
        ),
        (
            [
                Rule(),
                Rule("g", "l", role="leader", count=1),
                Rule("h", "l", role="leader", count=1),
            ],
            "multiple leader replicas for range {, }",
        ),
    ],
)
def test_the_key_space_check(rules: list[Rule], message: str) -> None:
    if not message:
        check_key_space(rules)
        return
    with pytest.raises(RuleError) as e:
        check_key_space(rules)
    assert e.value.status == 500 and e.value.message.endswith(message)


def test_an_overriding_group_can_leave_a_range_without_voters() -> None:
    edit = RuleSet.of([Rule(), Rule("t", "l", role="learner", count=1)]).edit()
    edit.set_group(RuleGroup("t", index=1, override=True))
    with pytest.raises(RuleError, match="needs at least one leader or voter"):
        edit.commit()


def pd_rule(**fields: Any) -> Rule:
    base = {"group_id": "pd", "id": "default", "role": "voter", "count": 3}
    return rule_from_json({**base, **fields})


def checked(coord: Coordinator) -> Operator | None:
    """What the rule checker does with region 1 under the coordinator's rules."""
    ctx = CheckContext(coord.view, coord.rules(), NOW, id_source())  # type: ignore[arg-type]
    return RuleChecker().check(ctx, coord.view.tree.get(1))[0]  # type: ignore[arg-type]


async def rules_written(*rules: Rule) -> tuple[Coordinator, MemoryStore]:
    stores = [store(1, zone="z1"), store(2, zone="z2"), store(3, zone="z3")]
    stores += [store(4, zone="z1"), store(5, zone="z2", disk="ssd")]
    c = cluster(stores, [region(1, [1, 2, 3])])
    coord = Coordinator(c, id_source(), started_at=NOW, schedulers=())  # type: ignore[arg-type]
    mem = MemoryStore()
    keeper = PlacementRules(
        mem, default=lambda: default_rules(c.config.replication), apply=coord.set_rules
    )
    await keeper.load()
    assert checked(coord) is None  # three voters on three stores: the default rule holds

    def change(e: Any) -> None:
        for r in rules:
            e.set_rule(r)

    await keeper.write(change)
    return coord, mem


async def test_a_written_rule_of_five_makes_the_checker_add_peers() -> None:
    coord, mem = await rules_written(pd_rule(count=5))
    op = checked(coord)
    assert op is not None and op.desc == "add-rule-peer"
    assert mem.rules is not None and [r.count for r in mem.rules.rules.values()] == [5]


async def test_a_written_label_constraint_picks_the_store() -> None:
    ssd = {"key": "disk", "op": "in", "values": ["ssd"]}
    learner = pd_rule(id="ssd-learner", role="learner", count=1, label_constraints=[ssd])
    coord, _ = await rules_written(learner)
    op = checked(coord)
    assert op is not None and isinstance(op.steps[0], AddLearnerStep)
    assert op.steps[0].to_store == 5  # the only store with disk=ssd


async def test_a_refused_write_changes_nothing_and_saves_nothing() -> None:
    coord, mem = await rules_written(pd_rule(count=5))
    writes, before = mem.writes, coord.rules()
    keeper = PlacementRules(mem, default=list, apply=coord.set_rules)
    await keeper.load()
    with pytest.raises(RuleError):
        await keeper.write(lambda e: e.delete_rule("pd", "default"))
    assert mem.writes == writes and coord.rules() == before


@pytest.mark.parametrize(
    ("rules", "new", "outcome"),
    [
        ([Rule(count=3)], ReplicationConfig(max_replicas=3), None),  # nothing changed
        ([Rule(count=3)], ReplicationConfig(max_replicas=5), 5),
        ([Rule(count=4)], ReplicationConfig(max_replicas=5), INCONSISTENT),
        ([Rule("pd", "x")], ReplicationConfig(max_replicas=5), NOT_ONLY_DEFAULT),
        ([Rule(end_key=b"m"), Rule("pd", "x", start_key=b"m")], ReplicationConfig(), None),
        (
            [Rule(end_key=b"m"), Rule("pd", "x", start_key=b"m")],
            ReplicationConfig(location_labels=("zone",)),
            NOT_ONLY_DEFAULT,
        ),
    ],
)
def test_a_replication_change_rewrites_the_default_rule(
    rules: list[Rule], new: ReplicationConfig, outcome: int | str | None
) -> None:
    old = ReplicationConfig()
    if isinstance(outcome, str):
        with pytest.raises(RuleError, match=outcome[:40]):
            follow_replication(RuleSet.of(rules), old, new)
        return
    got = follow_replication(RuleSet.of(rules), old, new)
    assert (got.count if got else None) == outcome
