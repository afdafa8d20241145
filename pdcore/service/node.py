"""PdNode: one PD member's state and the operations the PD API exposes.

It owns the domain objects (region tree, stores, TSO and ID allocators, GC state) and
persists through the `MetaStore` / `RegionStorage` ports. Handlers in the gRPC and HTTP
adapters are thin: decode, call a method here, encode. Writes that must be durable
(bootstrap, stores, ID and TSO marks, GC) are persisted before they are answered;
regions are written behind in batches.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from pdcore.domain.cluster import ClusterMeta, check_bootstrap, make_cluster_id
from pdcore.domain.config import ClusterConfig
from pdcore.domain.config import validate as validate_config
from pdcore.domain.errors import (
    AlreadyBootstrapped,
    CasConflict,
    InvalidValue,
    NotBootstrapped,
    NotLeader,
    PdError,
    RegionNotFound,
    StoreTombstone,
    TransportError,
)
from pdcore.domain.gc import GcState, ServiceSafePoint
from pdcore.domain.ids import MAX_ALLOC_COUNT, MAX_SPLIT_COUNT, MAX_SPLIT_IDS, IdAllocator
from pdcore.domain.region import Region, epoch_jump, validate_region_shape
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import (
    NodeState,
    Store,
    StoreState,
    StoreStats,
    parse_version,
    validate_store_shape,
)
from pdcore.domain.tso import DEFAULT_SAVE_INTERVAL_MS, Timestamp, TsoAllocator, WindowExhausted
from pdcore.ports import Clock, MetaStore, RegionStorage
from pdcore.service.rate_log import RateLimitedLog
from pdcore.service.scheduling import SchedulingService
from pdcore.service.streams import HeartbeatStreams

log = logging.getLogger("kubepd.node")

# How often the TSO window is checked and, when it runs low, saved further ahead.
TSO_KEEPER_TICK_S = 0.05

INIT_CLUSTER_REGION_THRESHOLD = 100
REJECT_LOG_PER_S = 20  # log lines for rejected region heartbeats, per second


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    member_id: int
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...] = ()
    binary_version: str = "8.5.0"
    git_hash: str = ""
    deploy_path: str = ""


class UnknownStoreStream(PdError):
    """A heartbeat from a store PD does not know: the stream is ended."""


@dataclass(slots=True)
class NodeStats:
    region_heartbeats: int = 0
    region_heartbeats_unchanged: int = 0
    region_heartbeats_rejected: int = 0
    store_heartbeats: int = 0
    tso_requests: int = 0
    tso_timestamps: int = 0
    ids_allocated: int = 0
    regions_flushed: int = 0
    # heartbeat stream read loops that failed, not by the client going away, by stream
    stream_errors: dict[str, int] = field(default_factory=dict)


class _Failures:
    """A background task's repeated failure: logged when it starts (with a traceback
    only for a bug) and when it ends, not on every retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def failed(self, e: Exception) -> None:
        self.count += 1
        if self.count == 1:
            log.warning(
                "%s failed: %s; retrying",
                self.what,
                e,
                exc_info=not isinstance(e, PdError | TransportError | OSError),
            )

    def ok(self) -> None:
        if self.count:
            log.info("%s works again after %d failed attempts", self.what, self.count)
            self.count = 0


@dataclass(slots=True)
class _DirtyRegions:
    changed: dict[int, Region] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)


class PdNode:
    def __init__(
        self,
        *,
        meta: MetaStore,
        region_storage: RegionStorage | None,
        clock: Clock,
        member: Member,
        config: ClusterConfig | None = None,
        tso_save_interval_ms: int = DEFAULT_SAVE_INTERVAL_MS,
        id_step: int = 1000,
        region_flush_interval_s: float = 1.0,
        is_leader: Callable[[], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.meta_store = meta
        self.region_storage = region_storage
        self.clock = clock
        self.member = member
        self.config = config or ClusterConfig()
        self.cluster_id = 0
        self.cluster: ClusterMeta | None = None
        self._stores: dict[int, Store] = {}
        self.tree = RegionTree()
        self.tso_alloc = TsoAllocator(save_interval_ms=tso_save_interval_ms)
        self.ids = IdAllocator(step=id_step)
        self.gc = GcState()
        self.global_config: dict[str, bytes] = {}
        self.global_config_revision = 0
        self.global_config_watchers: set[asyncio.Queue[int]] = set()
        self.min_resolved_ts: dict[int, int] = {}
        # Followers' region-sync streams: every accepted meta change is pushed to each.
        self.region_watchers: set[asyncio.Queue[Region]] = set()
        self.streams = HeartbeatStreams()
        # The scheduler role's scheduling API where this process hosts it: heartbeats
        # feed it, and PD's scheduling RPCs (GetOperator, ScatterRegion, ...) use it.
        self.scheduling: SchedulingService | None = None
        self.stats = NodeStats()
        self._is_leader = is_leader or (lambda: True)
        self._rng = rng or random.Random()
        self._tso_lock = asyncio.Lock()
        self._id_lock = asyncio.Lock()
        self._tso_saved = 0
        self._serving_writes = False  # took over TSO and IDs (cleared by step_down)
        self._keeper_failures = _Failures("extending the tso window")
        self._flush_failures = _Failures("saving regions")
        self._dirty = _DirtyRegions()
        self._flush_interval = region_flush_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._store_persisted_at: dict[int, float] = {}
        self._store_locks: dict[int, asyncio.Lock] = {}
        self._persisting: dict[int, asyncio.Task[None]] = {}
        self._rejects = RateLimitedLog(
            log, 1.0, clock=lambda: self.clock.monotonic_s(), burst=REJECT_LOG_PER_S
        )

    # -- lifecycle -----------------------------------------------------------
    async def load_durable(self, serve_writes: bool = True) -> None:
        """(Re)load durable state; with `serve_writes`, also take over TSO above the
        last saved window — what a new leader does before it answers anything.

        A follower's refresh (`serve_writes=False`) holds the TSO and ID locks, so it
        is ordered against a take-over: one that read the store before the take-over
        must not land after it and put back the marks the new leader just moved."""
        if serve_writes:
            await self._load_durable(serve_writes=True)
            return
        async with self._tso_lock, self._id_lock:
            if self._serving_writes and self._is_leader():
                return  # took over meanwhile: our marks are the newest
            await self._load_durable(serve_writes=False)

    async def _load_durable(self, serve_writes: bool) -> None:
        state = await self.meta_store.load()
        self.cluster_id = state.cluster_id or await self.meta_store.init_cluster_id(
            make_cluster_id(int(self.clock.now_s()), self._rng.getrandbits(32))
        )
        self.cluster = state.meta
        self._stores = dict(state.stores)
        self.gc = state.gc
        self.global_config = dict(state.global_config)
        if state.config is not None:
            try:
                validate_config(state.config)
                self.config = state.config
            except ValueError as e:  # saved before configs were validated
                log.warning("ignoring the saved config, which is invalid: %s", e)
        self.ids = IdAllocator(step=self.ids.step)
        self.ids.start(state.id_mark)
        self._tso_saved = state.tso_window
        if serve_writes:
            await self._start_tso()
            self._serving_writes = True

    async def become_leader(self) -> None:
        """A follower that won the pd-leader lease: its region tree (the synced cache)
        stays; durable marks are re-read and TSO restarts above the saved window."""
        async with self._tso_lock, self._id_lock:
            self.tso_alloc = TsoAllocator(
                save_interval_ms=self.tso_alloc.save_interval_ms, physical=self.tso_alloc.physical
            )
            await self.load_durable(serve_writes=True)
        log.info("became leader", extra={"id_mark": self.ids.end, "tso_window": self._tso_saved})

    def step_down(self) -> None:
        """Stop serving timestamps at once: nothing below our window may be reused."""
        self.tso_alloc.saved_until = 0
        self._serving_writes = False

    async def start(self, serve_writes: bool = True) -> None:
        await self.load_durable(serve_writes)
        if self.region_storage is not None:
            for region in await self.region_storage.load_regions():
                try:
                    self.tree.put(region)
                except PdError:
                    log.warning("dropping stale persisted region %d", region.id)
        self._started = True
        self._tasks = [
            asyncio.create_task(self._tso_keeper(), name="tso-keeper"),
            asyncio.create_task(self._region_flusher(), name="region-flusher"),
        ]
        log.info(
            "pd node started",
            extra={
                "cluster_id": self.cluster_id,
                "stores": len(self._stores),
                "regions": len(self.tree),
                "id_mark": self.ids.end,
            },
        )

    async def stop(self) -> None:
        self._started = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for t in list(self._persisting.values()):
            t.cancel()
        await self.flush_regions()

    @property
    def started(self) -> bool:
        return self._started

    def check_serving(self) -> None:
        if not self._is_leader():
            raise NotLeader()

    # -- TSO -----------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.clock.now_s() * 1000)

    async def _start_tso(self) -> None:
        window = self.tso_alloc.start(self._now_ms(), self._tso_saved)
        await self._persist_tso_window(window)

    async def _persist_tso_window(self, window: int) -> None:
        try:
            await self.meta_store.cas_tso_window(self._tso_saved, window)
        except CasConflict:
            # Someone else moved the window: we are no longer the only TSO server. Stop
            # for good (the keeper no longer retries); only a new take-over restarts.
            self.tso_alloc.saved_until = 0
            log.error("tso window changed underneath; refusing to serve timestamps")
            raise NotLeader("tso window was taken over by another member") from None
        self._tso_saved = window
        self.tso_alloc.set_window(window)

    async def _tso_keeper(self) -> None:
        while True:
            await self.clock.sleep(TSO_KEEPER_TICK_S)
            if not self._is_leader() or self.tso_alloc.saved_until == 0:
                continue
            need = self.tso_alloc.window_needed(self._now_ms())
            if need is not None:
                async with self._tso_lock:
                    try:
                        await self._persist_tso_window(need)
                        self._keeper_failures.ok()
                    except Exception as e:
                        self._keeper_failures.failed(e)

    async def tso(self, count: int) -> Timestamp:
        self.check_serving()
        if self.tso_alloc.saved_until == 0:
            raise NotLeader("tso is not ready on this member")
        self.stats.tso_requests += 1
        try:
            ts = self.tso_alloc.generate(count, self._now_ms())
        except WindowExhausted as e:
            async with self._tso_lock:
                try:
                    ts = self.tso_alloc.generate(count, self._now_ms())
                except WindowExhausted:
                    await self._persist_tso_window(e.needed_until)
                    ts = self.tso_alloc.generate(count, self._now_ms())
        self.stats.tso_timestamps += count
        return ts

    # -- IDs -----------------------------------------------------------------
    async def alloc_id(self, count: int = 1) -> int:
        """Allocate `count` ids; return the largest (the ids are id-count+1 .. id)."""
        if count > MAX_ALLOC_COUNT:
            raise InvalidValue(
                f"invalid request: alloc id count {count} exceeds the limit {MAX_ALLOC_COUNT}"
            )
        return await self._alloc_ids(count)

    async def _alloc_ids(self, count: int) -> int:
        self.check_serving()
        count = max(1, count)
        async with self._id_lock:
            need = self.ids.reservation_needed(count)
            if need is not None:
                try:
                    await self.meta_store.cas_id_mark(self.ids.end, need)
                except CasConflict:
                    raise NotLeader("id mark was taken over by another member") from None
                self.ids.set_end(need)
            self.stats.ids_allocated += count
            return self.ids.alloc(count)

    async def raise_id_mark(self, mark: int) -> int:
        """Make every id handed out from now on larger than `mark`; never lowers the
        mark (PD's `alloc_id` key written by tools). Returns the mark in force."""
        self.check_serving()
        async with self._id_lock:
            if mark > self.ids.end:
                try:
                    await self.meta_store.cas_id_mark(self.ids.end, mark)
                except CasConflict:
                    raise NotLeader("id mark was taken over by another member") from None
            self.ids.skip_to(mark)
            return self.ids.end

    # -- bootstrap -------------------------------------------------------------
    @property
    def is_bootstrapped(self) -> bool:
        return self.cluster is not None

    def require_bootstrapped(self) -> ClusterMeta:
        if self.cluster is None:
            raise NotBootstrapped()
        return self.cluster

    async def bootstrap(self, store: Store | None, region: Region | None) -> None:
        self.check_serving()
        if self.cluster is not None:
            raise AlreadyBootstrapped()
        check_bootstrap(store, region)
        assert store is not None and region is not None
        meta = ClusterMeta(self.cluster_id, self.config.replication.max_replicas)
        await self.meta_store.bootstrap(meta, store, region)
        self.cluster = meta
        self._stores[store.id] = store
        self.tree.put(region)
        self._publish(region)  # followers' caches must hold the first region too
        log.info("cluster bootstrapped", extra={"store": store.id, "region": region.id})

    # -- stores ----------------------------------------------------------------
    def stores(self) -> list[Store]:
        return list(self._stores.values())

    def get_store(self, store_id: int) -> Store | None:
        return self._stores.get(store_id)

    def require_store(self, store_id: int) -> Store:
        self.require_bootstrapped()
        store = self._stores.get(store_id)
        if store is None:
            raise PdError(f"invalid store ID {store_id}, not found")
        return store

    def cluster_version(self) -> str:
        versions = [
            (v, s.version)
            for s in self._stores.values()
            if not s.is_tombstone and (v := parse_version(s.version)) is not None
        ]
        return min(versions)[1].lstrip("v") if versions else "8.5.0"

    async def put_store(self, store: Store) -> Store:
        self.check_serving()
        self.require_bootstrapped()
        if store.id == 0:
            raise PdError("invalid put store request: store id is zero")
        if not store.address:
            raise PdError(f"invalid put store request: store {store.id} has no address")
        if store.version and parse_version(store.version) is None:
            raise PdError(f"invalid put store request: version {store.version!r} is not semver")
        for other in self._stores.values():
            if (
                other.id != store.id
                and not other.is_tombstone
                and (
                    other.address == store.address
                    or (store.peer_address and other.peer_address == store.peer_address)
                )
            ):
                raise PdError(
                    f"duplicated store address: {store.address} is used by store {other.id}"
                )
        old = self._stores.get(store.id)
        if old is not None:
            if old.is_tombstone or old.node_state == NodeState.REMOVED:
                raise StoreTombstone(f"store {store.id} is tombstone")
            labels = dict(old.labels)
            labels.update(dict(store.labels))
            store = store.with_(
                state=old.state,
                node_state=old.node_state,
                labels=tuple(sorted(labels.items())),
                last_heartbeat_ns=old.last_heartbeat_ns,
                stats=old.stats,
                physically_destroyed=old.physically_destroyed,
            )
        else:
            store = store.with_(state=StoreState.UP, node_state=NodeState.PREPARING)
        problem = validate_store_shape(store)
        if problem:
            raise InvalidValue(f"invalid put store request: {problem}")
        async with self._store_lock(store.id):
            await self.meta_store.save_store(store)
            self._stores[store.id] = store
        return store

    async def set_store_labels(self, store_id: int, labels: dict[str, str]) -> Store:
        """Replace a store's labels (PutStore merges; the API can also delete one)."""
        self.check_serving()
        store = self.require_store(store_id)
        if store.is_tombstone:
            raise StoreTombstone(f"store {store_id} is tombstone")
        new = store.with_(labels=tuple(sorted(labels.items())))
        async with self._store_lock(store_id):
            await self.meta_store.save_store(new)
            self._stores[store_id] = new
        return new

    async def set_store_state(self, store_id: int, state: StoreState, force: bool = False) -> Store:
        """Up <-> Offline from the API; Tombstone only once no region is left."""
        self.check_serving()
        store = self.require_store(store_id)
        if store.is_tombstone:
            raise StoreTombstone(f"store {store_id} is tombstone")
        if state == StoreState.OFFLINE and not store.is_offline:
            up = [s for s in self._stores.values() if s.is_up and s.id != store_id]
            if len(up) < self.config.replication.max_replicas and not force:
                raise PdError(
                    f"cannot take store {store_id} offline: only {len(up)} Up stores would "
                    f"remain, fewer than max-replicas {self.config.replication.max_replicas}"
                )
        if state == StoreState.TOMBSTONE and self.tree.store_stats(store_id).region_count > 0:
            raise PdError(f"store {store_id} still has regions; it cannot be buried")
        new = store.with_state(state).with_(
            physically_destroyed=store.physically_destroyed or force
        )
        async with self._store_lock(store_id):
            await self.meta_store.save_store(new)
            self._stores[store_id] = new
        log.info("store state changed", extra={"store": store_id, "state": state.name})
        return new

    async def bury_empty_offline_stores(self) -> list[int]:
        """Offline stores with no region left become Tombstone (PD's checkStores)."""
        buried = []
        for s in list(self._stores.values()):
            if s.is_offline and self.tree.store_stats(s.id).region_count == 0:
                await self.set_store_state(s.id, StoreState.TOMBSTONE)
                buried.append(s.id)
        return buried

    async def store_heartbeat(self, store_id: int, stats: StoreStats) -> Store:
        self.check_serving()
        self.require_bootstrapped()
        store = self._stores.get(store_id)
        if store is None:
            raise PdError(f"store {store_id} not found")
        if store.is_tombstone:
            raise StoreTombstone(f"store {store_id} is tombstone")
        self.stats.store_heartbeats += 1
        now = self.clock.now_s()
        node_state = store.node_state
        if node_state == NodeState.PREPARING and self._ready_to_serve(store, now):
            node_state = NodeState.SERVING
        new = store.with_(stats=stats, last_heartbeat_ns=int(now * 1e9), node_state=node_state)
        self._stores[store_id] = new
        # Heartbeat time is slow-moving state: persist it at a bounded rate.
        last = self._store_persisted_at.get(store_id, 0.0)
        mono = self.clock.monotonic_s()
        if node_state != store.node_state or mono - last > 60.0:
            self._store_persisted_at[store_id] = mono
            self._persist_store_later(store_id)
        return new

    def _store_lock(self, store_id: int) -> asyncio.Lock:
        """Writes of one store's metadata, one at a time, each of the latest state: a
        heartbeat's write can then never land after, and undo, a state change."""
        return self._store_locks.setdefault(store_id, asyncio.Lock())

    def _persist_store_later(self, store_id: int) -> None:
        """Heartbeat figures are already in memory; writing them must not hold up TiKV's
        heartbeat while the API server (or its etcd) is slow or away."""
        if store_id not in self._persisting:
            task = asyncio.get_running_loop().create_task(self._persist_store(store_id))
            self._persisting[store_id] = task
            task.add_done_callback(lambda _: self._persisting.pop(store_id, None))

    async def _persist_store(self, store_id: int) -> None:
        try:
            async with self._store_lock(store_id):
                store = self._stores.get(store_id)
                if store is not None:
                    await self.meta_store.save_store(store)
        except Exception as e:
            self._store_persisted_at.pop(store_id, None)  # again on the next heartbeat
            log.info("store %d heartbeat not persisted: %s", store_id, e)

    def _ready_to_serve(self, store: Store, now_s: float) -> bool:
        if len(self.tree) < INIT_CLUSTER_REGION_THRESHOLD:
            return True
        if store.start_timestamp and now_s - store.start_timestamp >= (
            self.config.schedule.max_store_preparing_time_s
        ):
            return True
        up = [s for s in self._stores.values() if s.is_up]
        total = sum(self.tree.store_stats(s.id).region_size for s in up)
        share = total / max(1, len(up))
        return self.tree.store_stats(store.id).region_size >= 0.9 * share

    # -- regions ---------------------------------------------------------------
    def region_heartbeat(self, region: Region) -> None:
        """Ingest one leader's report. Raises PdError for a rejected heartbeat (the
        stream stays open) and UnknownStoreStream when the stream must end; every
        rejection is counted and logged, so no report TiKV sends vanishes unseen."""
        self.stats.region_heartbeats += 1
        if region.leader is None:
            self._reject(
                region, PdError(f"invalid request: region {region.id} heartbeat has no leader")
            )
        origin = self.tree.get(region.id)
        if origin is not None and origin.same_meta(region):
            self.stats.region_heartbeats_unchanged += 1
            self.tree.put_unchecked_stats(region)
            if self.scheduling is not None:
                self.scheduling.on_region_heartbeat(region, origin)
            return
        problem = validate_region_shape(region) or (
            epoch_jump(origin.epoch, region.epoch) if origin is not None else None
        )
        if problem:
            self._reject(region, PdError(f"invalid request: {problem}"))
        leader_store = self._stores.get(region.leader.store_id)
        if leader_store is None:
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
        for r in removed:
            self._dirty.changed.pop(r.id, None)
            self._dirty.deleted.add(r.id)
        self._dirty.deleted.discard(region.id)
        self._dirty.changed[region.id] = region
        self._publish(region)
        if self.scheduling is not None:
            self.scheduling.on_region_heartbeat(region, origin)

    def _reject(self, region: Region, err: PdError) -> NoReturn:
        """Count and log a rejected heartbeat, then raise. At most REJECT_LOG_PER_S
        lines a second: a misbehaving store cannot flood the log, and the next line
        after a quiet spell says how many went unlogged (`suppressed`)."""
        self.stats.region_heartbeats_rejected += 1
        self._rejects.warning(
            "heartbeat-rejected",
            "region heartbeat rejected: %s",
            err,
            extra={"region": region.id, "epoch": tuple(region.epoch)},
        )
        raise err

    def _publish(self, region: Region) -> None:
        """Push an accepted meta change to every follower's region-sync stream."""
        for q in self.region_watchers:
            q.put_nowait(region)

    async def _region_flusher(self) -> None:
        while True:
            await self.clock.sleep(self._flush_interval)
            try:
                await self.flush_regions()
                self._flush_failures.ok()
            except Exception as e:
                self._flush_failures.failed(e)

    async def flush_regions(self) -> None:
        if self.region_storage is None:
            self._dirty = _DirtyRegions()
            return
        dirty, self._dirty = self._dirty, _DirtyRegions()
        if not dirty.changed and not dirty.deleted:
            return
        try:
            await self.region_storage.save_regions(list(dirty.changed.values()), dirty.deleted)
        except Exception:
            # Put them back (newer entries win) so nothing is lost.
            for rid, r in dirty.changed.items():
                self._dirty.changed.setdefault(rid, r)
            self._dirty.deleted |= dirty.deleted - set(self._dirty.changed)
            raise
        self.stats.regions_flushed += len(dirty.changed)

    def get_region(self, key: bytes) -> Region | None:
        self.require_bootstrapped()
        return self.tree.find(key)

    def get_prev_region(self, key: bytes) -> Region | None:
        self.require_bootstrapped()
        return self.tree.prev(key)

    def get_region_by_id(self, region_id: int) -> Region | None:
        self.require_bootstrapped()
        return self.tree.get(region_id)

    def scan_regions(self, start: bytes, end: bytes, limit: int) -> list[Region]:
        self.require_bootstrapped()
        if end and start >= end:
            raise PdError(
                "invalid request: scan start key is not below end key",
            )
        return self.tree.scan(start, end, max(0, limit))

    async def ask_batch_split(
        self, region: Region | None, split_count: int
    ) -> list[tuple[int, list[int]]]:
        self.check_serving()
        self.require_bootstrapped()
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
        if (
            region.epoch.version < known.epoch.version
            or region.epoch.conf_ver < known.epoch.conf_ver
        ):
            raise PdError(
                f"invalid region epoch: region {region.id} reports {tuple(region.epoch)}, "
                f"PD has {tuple(known.epoch)}"
            )
        last = await self._alloc_ids(per_region * split_count)
        first = last - per_region * split_count + 1
        out: list[tuple[int, list[int]]] = []
        for i in range(split_count):
            if i and i % 1000 == 0:
                await asyncio.sleep(0)  # let TSO and heartbeats in between chunks
            base = first + i * per_region
            out.append((base, list(range(base + 1, base + per_region))))
        return out

    def report_batch_split(self, regions: Sequence[Region]) -> None:
        self.require_bootstrapped()
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

    # -- cluster config ----------------------------------------------------------
    async def put_cluster_meta(self, max_peer_count: int) -> ClusterMeta:
        self.check_serving()
        meta = self.require_bootstrapped()
        if max_peer_count <= 0:
            raise PdError("invalid request: max_peer_count must be positive")
        new = ClusterMeta(meta.id, max_peer_count)
        await self.meta_store.save_meta(new)
        self.cluster = new
        return new

    async def set_config(self, config: ClusterConfig) -> None:
        try:
            validate_config(config)
        except ValueError as e:
            raise InvalidValue(f"invalid config: {e}") from None
        await self.meta_store.save_config(config)
        self.config = config

    # -- GC ----------------------------------------------------------------------
    async def update_gc_safe_point(self, safe_point: int) -> int:
        self.check_serving()
        self.require_bootstrapped()
        old = self.gc.safe_point
        new = self.gc.update_safe_point(safe_point)
        if new != old:
            await self.meta_store.save_gc(self.gc)
        return new

    async def update_service_safe_point(
        self, service_id: bytes, ttl_s: int, safe_point: int
    ) -> ServiceSafePoint | None:
        self.check_serving()
        self.require_bootstrapped()
        if not service_id:
            raise PdError("invalid request: service id is empty")
        if ttl_s > 0 and safe_point < self.gc.safe_point:
            # Below the cluster safe point: refuse and report the minimum in force.
            return self.gc.min_service_safe_point(int(self.clock.now_s()))
        changed, minimum = self.gc.update_service(
            service_id, ttl_s, safe_point, int(self.clock.now_s())
        )
        if changed:
            await self.meta_store.save_gc(self.gc)
        return minimum

    # -- global config -------------------------------------------------------------
    async def store_global_config(self, items: dict[str, bytes | None]) -> None:
        self.check_serving()
        await self.meta_store.save_global_config(items)
        for k, v in items.items():
            if v is None:
                self.global_config.pop(k, None)
            else:
                self.global_config[k] = v
        self.global_config_revision += 1
        for q in self.global_config_watchers:
            q.put_nowait(self.global_config_revision)

    def report_min_resolved_ts(self, store_id: int, ts: int) -> None:
        self.require_store(store_id)
        if ts > self.min_resolved_ts.get(store_id, 0):
            self.min_resolved_ts[store_id] = ts

    def cluster_min_resolved_ts(self) -> int:
        live = [self.min_resolved_ts.get(s.id, 0) for s in self._stores.values() if s.is_up]
        return min(live) if live else 0
