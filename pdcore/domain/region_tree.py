"""RegionTree: every region PD knows, indexed by key range and by id.

Lookups by key and ordered scans are O(log n) (a sorted map on start keys). Writes go
through `check` + `put`, which enforce PD's epoch rules: a heartbeat older than what is
known is rejected, and a newer region replaces every older region it overlaps (how
splits and merges become visible). Per-store counters are kept incrementally so store
scores never need a full scan.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from sortedcontainers import SortedDict

from pdcore.domain.errors import StaleRegion
from pdcore.domain.region import Region


@dataclass(slots=True)
class StoreRegionStats:
    """Aggregates over the regions that have a peer on one store."""

    region_count: int = 0
    region_size: int = 0  # MiB
    leader_count: int = 0
    leader_size: int = 0  # MiB
    learner_count: int = 0
    pending_peer_count: int = 0


class RegionTree:
    def __init__(self) -> None:
        self._by_start: SortedDict = SortedDict()  # start_key -> Region
        self._by_id: dict[int, Region] = {}
        self._stores: dict[int, StoreRegionStats] = {}

    # -- reads -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Region]:
        # In key order; twice as fast as iterating `values()` (a Python-level generator).
        return map(self._by_start.__getitem__, self._by_start)

    def get(self, region_id: int) -> Region | None:
        return self._by_id.get(region_id)

    def find(self, key: bytes) -> Region | None:
        """The region whose range contains `key`."""
        idx = self._by_start.bisect_right(key) - 1
        if idx < 0:
            return None
        region: Region = self._by_start.peekitem(idx)[1]
        return region if region.contains(key) else None

    def prev(self, key: bytes) -> Region | None:
        """The region just before the one containing `key` (adjacent on the left)."""
        current = self.find(key)
        if current is None or not current.start_key:
            return None
        left = self.find_ending_at(current.start_key)
        return left

    def find_ending_at(self, key: bytes) -> Region | None:
        idx = self._by_start.bisect_left(key) - 1
        if idx < 0:
            return None
        region: Region = self._by_start.peekitem(idx)[1]
        return region if region.end_key == key else None

    def next(self, region: Region) -> Region | None:
        """The region that starts exactly where `region` ends."""
        if not region.end_key:
            return None
        found: Region | None = self._by_start.get(region.end_key)
        return found

    def scan(self, start: bytes, end: bytes = b"", limit: int = 0) -> list[Region]:
        """Regions in key order from the one containing `start` up to `end` (exclusive)."""
        out: list[Region] = []
        idx = self._by_start.bisect_right(start) - 1
        if idx < 0:
            idx = 0
        else:
            first: Region = self._by_start.peekitem(idx)[1]
            if not first.contains(start) and first.end_key and first.end_key <= start:
                idx += 1
        values = self._by_start.values()
        n = len(values)
        while idx < n:
            region: Region = values[idx]
            if end and region.start_key >= end:
                break
            out.append(region)
            if limit and len(out) >= limit:
                break
            idx += 1
        return out

    def overlaps(self, region: Region) -> list[Region]:
        """Known regions (other than `region.id`) whose range intersects `region`'s."""
        return [r for r in self.scan(region.start_key, region.end_key) if r.id != region.id]

    def store_stats(self, store_id: int) -> StoreRegionStats:
        return self._stores.get(store_id) or StoreRegionStats()

    def store_ids(self) -> list[int]:
        return list(self._stores)

    def random_region(self, rng: random.Random) -> Region | None:
        if not self._by_start:
            return None
        region: Region = self._by_start.peekitem(rng.randrange(len(self._by_start)))[1]
        return region

    def total_size(self) -> int:
        return sum(s.leader_size for s in self._stores.values())

    # -- writes ------------------------------------------------------------
    def check(self, region: Region) -> list[Region]:
        """Raise StaleRegion if `region` is older than what is known; else return the
        regions it will replace (overlaps with versions not newer than its own)."""
        origin = self._by_id.get(region.id)
        if origin is not None:
            if region.term and origin.term and region.term < origin.term:
                raise StaleRegion(
                    f"region {region.id} term {region.term} is older than {origin.term}"
                )
            if region.epoch.is_stale_against(origin.epoch):
                raise StaleRegion(
                    f"region {region.id} epoch {tuple(region.epoch)} is stale, "
                    f"PD has {tuple(origin.epoch)}"
                )
        overlaps = self.overlaps(region)
        for other in overlaps:
            if region.epoch.version < other.epoch.version:
                raise StaleRegion(
                    f"region {region.id} version {region.epoch.version} overlaps newer "
                    f"region {other.id} version {other.epoch.version}"
                )
        return overlaps

    def put(self, region: Region) -> list[Region]:
        """Insert or replace `region` after `check`; returns the regions removed."""
        removed = self.check(region)
        for other in removed:
            self._remove(other)
        origin = self._by_id.get(region.id)
        if origin is not None:
            self._remove(origin)
        self._add(region)
        return removed

    def put_unchecked_stats(self, region: Region) -> None:
        """Replace a region whose meta is unchanged (only stats differ): fast path."""
        origin = self._by_id[region.id]
        self._account(origin, -1)
        self._by_id[region.id] = region
        self._by_start[region.start_key] = region
        self._account(region, +1)

    def remove(self, region_id: int) -> Region | None:
        region = self._by_id.get(region_id)
        if region is not None:
            self._remove(region)
        return region

    def _add(self, region: Region) -> None:
        self._by_id[region.id] = region
        self._by_start[region.start_key] = region
        self._account(region, +1)

    def _remove(self, region: Region) -> None:
        del self._by_id[region.id]
        current = self._by_start.get(region.start_key)
        if current is not None and current.id == region.id:
            del self._by_start[region.start_key]
        self._account(region, -1)

    def _account(self, region: Region, sign: int) -> None:
        size = region.approximate_size
        leader_store = region.leader_store_id
        for peer in region.peers:
            stats = self._stores.get(peer.store_id)
            if stats is None:
                stats = self._stores[peer.store_id] = StoreRegionStats()
            stats.region_count += sign
            stats.region_size += sign * size
            if peer.is_learner:
                stats.learner_count += sign
            if peer.store_id == leader_store:
                stats.leader_count += sign
                stats.leader_size += sign * size
            if region.pending_peers and region.is_pending(peer):
                stats.pending_peer_count += sign
