"""Per-store limits on snapshot-heavy work, as PD's store limit v1: a token bucket per
store and direction (add-peer, remove-peer) refilled at `limit` per minute. A step
costs one token, or 0.2 for a region under 20 MiB; the bucket holds at least one."""

from __future__ import annotations

import enum
from dataclasses import dataclass

SMALL_REGION_MIB = 20
UNLIMITED = 1e8


class LimitType(enum.Enum):
    ADD_PEER = "add-peer"
    REMOVE_PEER = "remove-peer"


def step_cost(region_size_mib: int) -> float:
    return 0.2 if region_size_mib < SMALL_REGION_MIB else 1.0


@dataclass(slots=True)
class TokenBucket:
    per_minute: float
    tokens: float = 0.0
    updated_at: float | None = None

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute / 60.0)

    def _refill(self, now: float) -> None:
        if self.updated_at is None:
            self.tokens = self.capacity
        else:
            rate = self.per_minute / 60.0
            self.tokens = min(self.capacity, self.tokens + (now - self.updated_at) * rate)
        self.updated_at = now

    def available(self, cost: float, now: float) -> bool:
        if self.per_minute >= UNLIMITED:
            return True
        self._refill(now)
        return self.tokens + 1e-9 >= cost

    def take(self, cost: float, now: float) -> None:
        if self.per_minute >= UNLIMITED:
            return
        self._refill(now)
        self.tokens -= cost


class StoreLimits:
    def __init__(self, add_per_minute: float, remove_per_minute: float) -> None:
        self.defaults = {
            LimitType.ADD_PEER: add_per_minute,
            LimitType.REMOVE_PEER: remove_per_minute,
        }
        self._buckets: dict[tuple[int, LimitType], TokenBucket] = {}
        self._overrides: dict[tuple[int, LimitType], float] = {}

    def set_defaults(self, add_per_minute: float, remove_per_minute: float) -> None:
        """The configured rates now (they change live, as PD's store limit API does):
        buckets at an old default start over at the new one."""
        new = {LimitType.ADD_PEER: add_per_minute, LimitType.REMOVE_PEER: remove_per_minute}
        if new == self.defaults:
            return
        self.defaults = new
        for key in [k for k in self._buckets if k not in self._overrides]:
            del self._buckets[key]

    def set_rate(self, store_id: int, kind: LimitType, per_minute: float) -> None:
        self._overrides[(store_id, kind)] = per_minute
        self._buckets.pop((store_id, kind), None)

    def clear_rate(self, store_id: int, kind: LimitType) -> None:
        if self._overrides.pop((store_id, kind), None) is not None:
            self._buckets.pop((store_id, kind), None)

    def bucket(self, store_id: int, kind: LimitType) -> TokenBucket:
        key = (store_id, kind)
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = TokenBucket(self._overrides.get(key, self.defaults[kind]))
        return b
