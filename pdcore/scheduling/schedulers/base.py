"""What every scheduler gets and returns."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.scheduling.cluster import ClusterView
from pdcore.scheduling.controller import OperatorController
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import Operator, OpKind, StoreInfluence
from pdcore.scheduling.rules import Rule, default_rules, move_keeps_rules

SAMPLE_TRIES = 64


@dataclass
class HotStat:
    write_bytes: float = 0.0  # bytes/s
    read_bytes: float = 0.0
    write_keys: float = 0.0
    read_keys: float = 0.0
    write_query: float = 0.0
    read_query: float = 0.0

    def rate(self, kind: str, dimension: str) -> float:
        """bytes/s, keys/s or queries/s for "read" or "write"."""
        return float(
            getattr(
                self, f"{kind}_{ {'byte': 'bytes', 'key': 'keys', 'query': 'query'}[dimension] }"
            )
        )


@dataclass
class SchedContext:
    view: ClusterView
    controller: OperatorController
    now: float
    rng: random.Random
    new_id: Callable[[], int | None]
    hot: dict[int, HotStat] = field(default_factory=dict)
    evicted: set[int] = field(default_factory=set)
    rules: list[Rule] = field(default_factory=list)  # the placement rules in force

    def keeps_rules(self, region: Region, source: int, target: int) -> bool:
        """Whether moving `region`'s replica from `source` to `target` keeps it as close
        to its placement rules as it is (never undo what the rule checker does)."""
        rules = self.rules or default_rules(self.view.config.replication)
        stores = {s.id: s for s in self.view.stores()}
        return move_keeps_rules(region, source, target, rules, stores)

    def stores(self) -> list[Store]:
        return [s for s in self.view.stores() if not s.is_tombstone]

    def influence(self) -> dict[int, StoreInfluence]:
        return self.controller.influence()

    def free(self, region: Region) -> bool:
        return region.id not in self.controller.running

    def sample_regions(self, pred: Callable[[Region], bool], n: int) -> list[Region]:
        """Up to `n` distinct random regions satisfying `pred` (sampling, not a scan)."""
        out: dict[int, Region] = {}
        tree = self.view.tree
        for _ in range(SAMPLE_TRIES * max(1, n)):
            r = tree.random_region(self.rng)
            if r is None:
                break
            if r.id not in out and pred(r):
                out[r.id] = r
                if len(out) >= n:
                    break
        return list(out.values())


class Scheduler(Protocol):
    name: str
    kind: OpKind

    def schedule(self, ctx: SchedContext, diag: Diagnosis) -> list[Operator]: ...

    def config(self) -> dict[str, Any]: ...

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply a partial config at run time; ValueError names what is wrong."""
        ...
