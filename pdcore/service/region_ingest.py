"""RegionIngest: the region view — heartbeats in, the tree, reads out.

Each leader's report is checked (shape, epoch, a known store, a leader among its
peers) and put into the `RegionTree`; an accepted change of meta is pushed to every
follower's region-sync stream and written behind to `RegionStorage` in batches. Every
rejected report is counted and logged at a bounded rate. Splits are asked and
reported here too (ids come from the `IdService`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from pdcore.domain.errors import InvalidValue, PdError, RegionNotFound
from pdcore.domain.ids import MAX_SPLIT_COUNT, MAX_SPLIT_IDS
from pdcore.domain.region import Region, epoch_jump, validate_region_shape
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import Store
from pdcore.ports import RegionStorage
from pdcore.service.id_service import IdService
from pdcore.service.member_state import MemberState, RetryLog
from pdcore.service.rate_log import RateLimitedLog

log = logging.getLogger("kubepd.node")

REJECT_LOG_PER_S = 20  # log lines for rejected region heartbeats, per second


class UnknownStoreStream(PdError):
    """A heartbeat from a store PD does not know: the stream is ended."""


@dataclass(slots=True)
class _DirtyRegions:
    changed: dict[int, Region] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)


class RegionIngest:
    def __init__(
        self,
        member: MemberState,
        tree: RegionTree,
        store_of: Callable[[int], Store | None],
        ids: IdService,
        storage: RegionStorage | None,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.member = member
        self.tree = tree
        self.store_of = store_of
        self.ids = ids
        self.storage = storage
        self.flush_interval_s = flush_interval_s
        # Followers' region-sync streams: every accepted meta change is pushed to each.
        self.watchers: set[asyncio.Queue[Region]] = set()
        self.flush_failures = RetryLog("saving regions")
        self._dirty = _DirtyRegions()
        self._rejects = RateLimitedLog(
            log, 1.0, clock=lambda: self.member.clock.monotonic_s(), burst=REJECT_LOG_PER_S
        )

    async def load(self) -> None:
        """The regions saved last time (a warm start: TiKV re-reports them anyway)."""
        if self.storage is None:
            return
        for region in await self.storage.load_regions():
            try:
                self.tree.put(region)
            except PdError:
                log.warning("dropping stale persisted region %d", region.id)

    def put_first(self, region: Region) -> None:
        """The bootstrap region (saved with the cluster's bootstrap)."""
        self.tree.put(region)
        self.publish(region)  # followers' caches must hold the first region too

    # -- heartbeats ------------------------------------------------------------------
    def region_heartbeat(self, region: Region) -> None:
        """Ingest one leader's report. Raises PdError for a rejected heartbeat (the
        stream stays open) and UnknownStoreStream when the stream must end; every
        rejection is counted and logged, so no report TiKV sends vanishes unseen."""
        stats = self.member.stats
        stats.region_heartbeats += 1
        if region.leader is None:
            self._reject(
                region, PdError(f"invalid request: region {region.id} heartbeat has no leader")
            )
        origin = self.tree.get(region.id)
        if origin is not None and origin.same_meta(region):
            stats.region_heartbeats_unchanged += 1
            self.tree.put_unchecked_stats(region)
            if (scheduling := self.member.scheduling) is not None:
                scheduling.on_region_heartbeat(region, origin)
            return
        problem = validate_region_shape(region) or (
            epoch_jump(origin.epoch, region.epoch) if origin is not None else None
        )
        if problem:
            self._reject(region, PdError(f"invalid request: {problem}"))
        if self.store_of(region.leader.store_id) is None:
            self._reject(region, UnknownStoreStream(f"store {region.leader.store_id} not found"))
        if region.peer_by_id(region.leader.id) is None:
            self._reject(
                region,
                PdError(f"invalid request: region {region.id} leader is not one of its peers"),
            )
        try:
            removed = self.tree.put(region)
        except PdError as e:
            self._reject(region, e)
        dirty = self._dirty
        for r in removed:
            dirty.changed.pop(r.id, None)
            dirty.deleted.add(r.id)
        dirty.deleted.discard(region.id)
        dirty.changed[region.id] = region
        self.publish(region)
        if (scheduling := self.member.scheduling) is not None:
            scheduling.on_region_heartbeat(region, origin)

    def _reject(self, region: Region, err: PdError) -> NoReturn:
        """Count and log a rejected heartbeat, then raise. At most REJECT_LOG_PER_S
        lines a second: a misbehaving store cannot flood the log, and the next line
        after a quiet spell says how many went unlogged (`suppressed`)."""
        self.member.stats.region_heartbeats_rejected += 1
        self._rejects.warning(
            "heartbeat-rejected",
            "region heartbeat rejected: %s",
            err,
            extra={"region": region.id, "epoch": tuple(region.epoch)},
        )
        raise err

    def publish(self, region: Region) -> None:
        """Push an accepted meta change to every follower's region-sync stream."""
        for q in self.watchers:
            q.put_nowait(region)

    # -- written behind ------------------------------------------------------------------
    async def flusher(self) -> None:
        while True:
            await self.member.clock.sleep(self.flush_interval_s)
            try:
                await self.flush()
                self.flush_failures.ok()
            except Exception as e:
                self.flush_failures.failed(e)

    async def flush(self) -> None:
        if self.storage is None:
            self._dirty = _DirtyRegions()
            return
        dirty, self._dirty = self._dirty, _DirtyRegions()
        if not dirty.changed and not dirty.deleted:
            return
        try:
            await self.storage.save_regions(list(dirty.changed.values()), dirty.deleted)
        except Exception:
            # Put them back (newer entries win) so nothing is lost.
            for rid, r in dirty.changed.items():
                self._dirty.changed.setdefault(rid, r)
            self._dirty.deleted |= dirty.deleted - set(self._dirty.changed)
            raise
        self.member.stats.regions_flushed += len(dirty.changed)

    # -- reads ------------------------------------------------------------------------
    def get_region(self, key: bytes) -> Region | None:
        self.member.require_bootstrapped()
        return self.tree.find(key)

    def get_prev_region(self, key: bytes) -> Region | None:
        self.member.require_bootstrapped()
        return self.tree.prev(key)

    def get_region_by_id(self, region_id: int) -> Region | None:
        self.member.require_bootstrapped()
        return self.tree.get(region_id)

    def scan_regions(self, start: bytes, end: bytes, limit: int) -> list[Region]:
        self.member.require_bootstrapped()
        if end and start >= end:
            raise PdError(
                "invalid request: scan start key is not below end key",
            )
        return self.tree.scan(start, end, max(0, limit))

    # -- splits -------------------------------------------------------------------------
    async def ask_batch_split(
        self, region: Region | None, split_count: int
    ) -> list[tuple[int, list[int]]]:
        self.member.check_serving()
        self.member.require_bootstrapped()
        if region is None:
            raise RegionNotFound("missing region for split")
        if split_count <= 0:
            raise PdError("invalid request: split count must be positive")
        per_region = 1 + len(region.peers)
        if split_count > MAX_SPLIT_COUNT or split_count * per_region > MAX_SPLIT_IDS:
            raise InvalidValue(
                f"invalid request: split count {split_count} for a region of "
                f"{len(region.peers)} peers exceeds the limit ({MAX_SPLIT_COUNT} splits, "
                f"{MAX_SPLIT_IDS} ids per request)"
            )
        known = self.tree.find(region.start_key)
        if known is None or known.id != region.id:
            known = self.tree.get(region.id)
        if known is None:
            raise PdError(f"region {region.id} not found")
        if region.epoch.is_stale_against(known.epoch):
            raise PdError(
                f"invalid region epoch: region {region.id} reports {tuple(region.epoch)}, "
                f"PD has {tuple(known.epoch)}"
            )
        last = await self.ids.alloc_ids(per_region * split_count)
        first = last - per_region * split_count + 1
        out: list[tuple[int, list[int]]] = []
        for i in range(split_count):
            if i and i % 1000 == 0:
                await asyncio.sleep(0)  # let TSO and heartbeats in between chunks
            base = first + i * per_region
            out.append((base, list(range(base + 1, base + per_region))))
        return out

    def report_batch_split(self, regions: Sequence[Region]) -> None:
        self.member.require_bootstrapped()
        if len(regions) < 2:
            raise PdError("invalid request: a split reports at least two regions")
        for r in regions:
            problem = validate_region_shape(r)
            if problem:
                raise PdError(f"invalid request: {problem}")
        for left, right in itertools.pairwise(regions):
            if not left.end_key or left.end_key != right.start_key:
                raise PdError(
                    f"invalid split region: region {left.id} ends at {left.end_key.hex()}, "
                    f"region {right.id} starts at {right.start_key.hex()}"
                )
        # Like PD, the tree changes only through the new regions' heartbeats, which
        # may come before or after this report; the report is for the record.
        log.info(
            "region batch split, generate new regions",
            extra={"origin": regions[-1].id, "new": [r.id for r in regions[:-1]]},
        )
