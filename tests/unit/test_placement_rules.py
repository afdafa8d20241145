"""PlacementRules, the embedded mode's rule keeper: a write the store cannot save
changes nothing, concurrent writes do not lose one another, and the saved rules are
in force from load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pdcore.adapters.storage.memory import MemoryStore
from pdcore.scheduling.rule_config import RuleEdit, RuleSet
from pdcore.scheduling.rules import Rule
from pdcore.service.placement_rules import PlacementRules


class SlowStore(MemoryStore):
    """Yields to the loop inside every save, as LocalStore's worker thread does."""

    async def save_rules(self, rules: RuleSet) -> None:
        await asyncio.sleep(0)
        await super().save_rules(rules)


def keeper(store: MemoryStore, applied: list[list[Rule] | None]) -> PlacementRules:
    return PlacementRules(store, default=lambda: [Rule()], apply=applied.append)


def add(rule_id: str) -> Callable[[RuleEdit], None]:
    def change(e: RuleEdit) -> None:
        e.set_rule(Rule("g", rule_id, role="learner", count=1))

    return change


async def test_a_write_the_store_refuses_changes_nothing() -> None:
    store, applied = MemoryStore(), list[list[Rule] | None]()
    rules = keeper(store, applied)
    await rules.load()
    store.fail_writes = True
    with pytest.raises(OSError):
        await rules.write(add("a"))
    assert rules.saved is None and applied == [] and store.rules is None
    assert list(rules.current().rules) == [("pd", "default")]


async def test_concurrent_writes_both_land() -> None:
    store: MemoryStore = SlowStore()
    applied: list[list[Rule] | None] = []
    rules = keeper(store, applied)
    await rules.load()
    await asyncio.gather(*(rules.write(add(i)) for i in "abc"))
    assert store.rules is not None
    assert sorted(store.rules.rules) == [("g", "a"), ("g", "b"), ("g", "c"), ("pd", "default")]


async def test_saved_rules_are_in_force_from_load() -> None:
    store = MemoryStore()
    store.rules = RuleSet.of([Rule(count=5)])
    applied: list[list[Rule] | None] = []
    await keeper(store, applied).load()
    assert [[r.count for r in rules or []] for rules in applied] == [[5]]
