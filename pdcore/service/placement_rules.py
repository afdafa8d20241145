"""The embedded mode's placement rules: written over PD's API, kept, applied.

Without Kubernetes there are no PlacementRule objects, so PD's rule endpoints edit
the rules here. Until the first write the rule in force is PD's default rule from
the replication config (it follows max-replicas); the first write starts from that
rule, as PD does with placement rules enabled, and from then on a change of
max-replicas (location-labels, isolation-level) rewrites the written `pd/default`
(`replication_change`), as PD keeps the two in step. Each write is one checked edit
(`rule_config`), saved through the `RuleStore` port before it takes effect, and the
result goes to scheduling (`apply`). Writes are serialised, so two concurrent
edits cannot lose one another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pdcore.domain.config import ReplicationConfig
from pdcore.ports import RuleStore
from pdcore.scheduling.rule_config import RuleEdit, RuleSet, follow_replication
from pdcore.scheduling.rules import Rule


class PlacementRules:
    def __init__(
        self,
        store: RuleStore,
        *,
        default: Callable[[], list[Rule]],
        apply: Callable[[list[Rule] | None], None],
    ) -> None:
        """`default`: the rules in force before any write; `apply`: hands the rules in
        force to scheduling."""
        self.store = store
        self.default = default
        self.apply = apply
        self.saved: RuleSet | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        self.saved = await self.store.load_rules()
        if self.saved is not None:
            self.apply(self.saved.rules_in_force())

    def current(self) -> RuleSet:
        return self.saved if self.saved is not None else RuleSet.of(self.default())

    async def write(self, change: Callable[[RuleEdit], None]) -> None:
        """Apply `change` to the rules in force; RuleError (and nothing changed) if
        PD would refuse the result, or the store's error if it cannot be saved."""
        async with self._lock:
            edit = self.current().edit()
            change(edit)
            new = edit.commit()
            await self.store.save_rules(new)
            self.saved = new
            self.apply(new.rules_in_force())

    def replication_change(self, old: ReplicationConfig, new: ReplicationConfig) -> Rule | None:
        """The default rule a replication config change rewrites once rules were
        written (before that the default rule follows the config by itself); RuleError
        if PD refuses the change."""
        return None if self.saved is None else follow_replication(self.saved, old, new)
