"""The explicit table of schedulers that can be created by name at run time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pdcore.scheduling.schedulers.balance_leader import BalanceLeader
from pdcore.scheduling.schedulers.balance_region import BalanceRegion
from pdcore.scheduling.schedulers.base import Scheduler
from pdcore.scheduling.schedulers.evict_leader import EvictLeader
from pdcore.scheduling.schedulers.hot_region import HotRegion

DEFAULTS = ("balance-leader-scheduler", "balance-region-scheduler", "balance-hot-region-scheduler")


def _evict(args: dict[str, Any]) -> Scheduler:
    store = args.get("store_id")
    if not isinstance(store, int) or store <= 0:
        raise ValueError("evict-leader-scheduler needs a positive integer store_id")
    return EvictLeader([store], name=f"evict-leader-scheduler-{store}")


def _batch(args: dict[str, Any]) -> Scheduler:
    batch = args.get("batch", 4)
    if not isinstance(batch, int):
        raise ValueError("batch must be an integer")
    return BalanceLeader(batch=batch)


SCHEDULERS: dict[str, Callable[[dict[str, Any]], Scheduler]] = {
    "balance-leader-scheduler": _batch,
    "balance-region-scheduler": lambda args: BalanceRegion(),
    "balance-hot-region-scheduler": lambda args: HotRegion(),
    "hot-region-scheduler": lambda args: HotRegion(),
    "evict-leader-scheduler": _evict,
}


def create(name: str, args: dict[str, Any]) -> Scheduler:
    factory = SCHEDULERS.get(name)
    if factory is None:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(sorted(SCHEDULERS))}")
    return factory(args)
