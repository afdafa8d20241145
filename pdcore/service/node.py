"""PdNode: one PD member — the façade the PD API's adapters call.

The work is done by services with one job each, all sharing one `MemberState` (the
ports, the config in force, the pd-leader gate, whether the cluster is bootstrapped):

* `TsoService` (tso_service.py) — timestamps below a window saved ahead;
* `IdService` (id_service.py) — ids above a durable high-water mark;
* `StoreRegistry` (store_registry.py) — stores, their states, heartbeats, min resolved ts;
* `RegionIngest` (region_ingest.py) — region heartbeats, the tree, reads, splits, the
  write-behind to `RegionStorage` and the push to followers' region-sync streams;
* `SafePoints` (safe_points.py) — GC and service safe points;
* `GlobalConfig` (global_config.py) — PD's global config items and their watchers.

What is left here is the member's life: loading durable state, taking over as
pd-leader and stepping down, bootstrap, the cluster meta and config. Handlers in the
gRPC and HTTP adapters stay thin: decode, call a method here, encode. Writes that must be
durable (bootstrap, stores, ID and TSO marks, GC) are persisted before they are answered;
regions are written behind in batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pdcore.domain.cluster import ClusterMeta, check_bootstrap, make_cluster_id
from pdcore.domain.config import ClusterConfig
from pdcore.domain.config import validate as validate_config
from pdcore.domain.errors import AlreadyBootstrapped, InvalidValue, PdError
from pdcore.domain.gc import GcState, ServiceSafePoint
from pdcore.domain.ids import IdAllocator
from pdcore.domain.region import Region
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import Store, StoreState, StoreStats
from pdcore.domain.tso import DEFAULT_SAVE_INTERVAL_MS, Timestamp, TsoAllocator
from pdcore.ports import Clock, MetaStore, RegionStorage
from pdcore.service.global_config import GlobalConfig
from pdcore.service.id_service import IdService
from pdcore.service.member_state import MemberState, NodeStats
from pdcore.service.region_ingest import RegionIngest
from pdcore.service.safe_points import SafePoints
from pdcore.service.scheduling import SchedulingService
from pdcore.service.store_registry import StoreRegistry
from pdcore.service.streams import HeartbeatStreams
from pdcore.service.tso_service import TsoService

log = logging.getLogger("kubepd.node")


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    member_id: int
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...] = ()
    binary_version: str = "8.5.0"
    git_hash: str = ""
    deploy_path: str = ""


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
        self.member = member
        self.state = MemberState(meta, clock, config or ClusterConfig(), is_leader or _always)
        self.cluster_id = 0
        self.tree = RegionTree()
        self.timestamps = TsoService(self.state, tso_save_interval_ms)
        self.id_service = IdService(self.state, id_step)
        self.store_registry = StoreRegistry(self.state, self.tree)
        self.regions = RegionIngest(
            self.state,
            self.tree,
            self.store_registry.get_store,
            self.id_service,
            region_storage,
            region_flush_interval_s,
        )
        self.safe_points = SafePoints(self.state)
        self.global_configs = GlobalConfig(self.state)
        self.streams = HeartbeatStreams()
        self._rng = rng or random.Random()
        self._serving_writes = False  # took over TSO and IDs (cleared by step_down)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # -- what the services share, read and written here ------------------------------
    @property
    def clock(self) -> Clock:
        return self.state.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.state.clock = clock

    @property
    def config(self) -> ClusterConfig:
        return self.state.config

    @config.setter
    def config(self, config: ClusterConfig) -> None:
        self.state.config = config

    @property
    def scheduling(self) -> SchedulingService | None:
        """The scheduler role's scheduling API where this process hosts it."""
        return self.state.scheduling

    @scheduling.setter
    def scheduling(self, scheduling: SchedulingService | None) -> None:
        self.state.scheduling = scheduling

    @property
    def cluster(self) -> ClusterMeta | None:
        return self.state.cluster

    @property
    def stats(self) -> NodeStats:
        return self.state.stats

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
        async with self.timestamps.lock, self.id_service.lock:
            if self._serving_writes and self.state.is_leader():
                return  # took over meanwhile: our marks are the newest
            await self._load_durable(serve_writes=False)

    async def _load_durable(self, serve_writes: bool) -> None:
        state = await self.meta_store.load()
        self.cluster_id = state.cluster_id or await self.meta_store.init_cluster_id(
            make_cluster_id(int(self.clock.now_s()), self._rng.getrandbits(32))
        )
        self.state.cluster = state.meta
        self.store_registry.load(state.stores)
        self.safe_points.gc = state.gc
        self.global_configs.load(state.global_config)
        if state.config is not None:
            try:
                validate_config(state.config)
                self.config = state.config
            except ValueError as e:  # saved before configs were validated
                log.warning("ignoring the saved config, which is invalid: %s", e)
        self.id_service.load(state.id_mark)
        self.timestamps.saved = state.tso_window
        if serve_writes:
            await self.timestamps.take_over()
            self._serving_writes = True

    async def become_leader(self) -> None:
        """A follower that won the pd-leader lease: its region tree (the synced cache)
        stays; durable marks are re-read and TSO restarts above the saved window."""
        async with self.timestamps.lock, self.id_service.lock:
            self.timestamps.restart()
            await self.load_durable(serve_writes=True)
        log.info(
            "became leader",
            extra={"id_mark": self.ids.end, "tso_window": self.timestamps.saved},
        )

    def step_down(self) -> None:
        """Stop serving timestamps at once: nothing below our window may be reused."""
        self.timestamps.step_down()
        self._serving_writes = False

    async def start(self, serve_writes: bool = True) -> None:
        await self.load_durable(serve_writes)
        await self.regions.load()
        self._started = True
        self._tasks = [
            asyncio.create_task(self.timestamps.keeper(), name="tso-keeper"),
            asyncio.create_task(self.regions.flusher(), name="region-flusher"),
        ]
        log.info(
            "pd node started",
            extra={
                "cluster_id": self.cluster_id,
                "stores": len(self.store_registry.by_id),
                "regions": len(self.tree),
                "id_mark": self.ids.end,
            },
        )

    async def stop(self, flush: bool = True) -> None:
        """Stop the node's loops; `flush=False` leaves unsaved region changes unsaved,
        as a crash would (the simulator's fault swarm restarts PD both ways)."""
        self._started = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self.store_registry.stop()
        if flush:
            await self.flush_regions()

    @property
    def started(self) -> bool:
        return self._started

    def check_serving(self) -> None:
        self.state.check_serving()

    # -- bootstrap and the cluster meta -------------------------------------------------
    @property
    def is_bootstrapped(self) -> bool:
        return self.state.cluster is not None

    def require_bootstrapped(self) -> ClusterMeta:
        return self.state.require_bootstrapped()

    async def bootstrap(self, store: Store | None, region: Region | None) -> None:
        self.check_serving()
        if self.state.cluster is not None:
            raise AlreadyBootstrapped()
        check_bootstrap(store, region)
        assert store is not None and region is not None
        meta = ClusterMeta(self.cluster_id, self.config.replication.max_replicas)
        await self.meta_store.bootstrap(meta, store, region)
        self.state.cluster = meta
        self.store_registry.add_first(store)
        self.regions.put_first(region)
        log.info("cluster bootstrapped", extra={"store": store.id, "region": region.id})

    async def put_cluster_meta(self, max_peer_count: int) -> ClusterMeta:
        self.check_serving()
        meta = self.require_bootstrapped()
        if max_peer_count <= 0:
            raise PdError("invalid request: max_peer_count must be positive")
        new = ClusterMeta(meta.id, max_peer_count)
        await self.meta_store.save_meta(new)
        self.state.cluster = new
        return new

    async def set_config(self, config: ClusterConfig) -> None:
        try:
            validate_config(config)
        except ValueError as e:
            raise InvalidValue(f"invalid config: {e}") from None
        await self.meta_store.save_config(config)
        self.config = config

    # -- TSO and IDs (TsoService, IdService) ----------------------------------------------
    @property
    def tso_alloc(self) -> TsoAllocator:
        return self.timestamps.alloc

    @property
    def ids(self) -> IdAllocator:
        return self.id_service.ids

    async def tso(self, count: int) -> Timestamp:
        return await self.timestamps.tso(count)

    async def alloc_id(self, count: int = 1) -> int:
        """Allocate `count` ids; return the largest (the ids are id-count+1 .. id)."""
        return await self.id_service.alloc_id(count)

    async def raise_id_mark(self, mark: int) -> int:
        return await self.id_service.raise_id_mark(mark)

    # -- stores (StoreRegistry) -------------------------------------------------------------
    def stores(self) -> list[Store]:
        return self.store_registry.stores()

    def get_store(self, store_id: int) -> Store | None:
        return self.store_registry.get_store(store_id)

    def require_store(self, store_id: int) -> Store:
        return self.store_registry.require_store(store_id)

    def cluster_version(self) -> str:
        return self.store_registry.cluster_version()

    async def put_store(self, store: Store) -> Store:
        return await self.store_registry.put_store(store)

    async def set_store_labels(self, store_id: int, labels: dict[str, str]) -> Store:
        return await self.store_registry.set_store_labels(store_id, labels)

    async def set_store_state(self, store_id: int, state: StoreState, force: bool = False) -> Store:
        return await self.store_registry.set_store_state(store_id, state, force)

    async def bury_empty_offline_stores(self) -> list[int]:
        return await self.store_registry.bury_empty_offline_stores()

    async def store_heartbeat(self, store_id: int, stats: StoreStats) -> Store:
        return await self.store_registry.store_heartbeat(store_id, stats)

    @property
    def min_resolved_ts(self) -> dict[int, int]:
        return self.store_registry.min_resolved_ts

    def report_min_resolved_ts(self, store_id: int, ts: int) -> None:
        self.store_registry.report_min_resolved_ts(store_id, ts)

    def cluster_min_resolved_ts(self) -> int:
        return self.store_registry.cluster_min_resolved_ts()

    # -- regions (RegionIngest) ---------------------------------------------------------------
    @property
    def region_watchers(self) -> set[asyncio.Queue[Region]]:
        return self.regions.watchers

    def region_heartbeat(self, region: Region) -> None:
        self.regions.region_heartbeat(region)

    async def flush_regions(self) -> None:
        await self.regions.flush()

    def get_region(self, key: bytes) -> Region | None:
        return self.regions.get_region(key)

    def get_prev_region(self, key: bytes) -> Region | None:
        return self.regions.get_prev_region(key)

    def get_region_by_id(self, region_id: int) -> Region | None:
        return self.regions.get_region_by_id(region_id)

    def scan_regions(self, start: bytes, end: bytes, limit: int) -> list[Region]:
        return self.regions.scan_regions(start, end, limit)

    async def ask_batch_split(
        self, region: Region | None, split_count: int
    ) -> list[tuple[int, list[int]]]:
        return await self.regions.ask_batch_split(region, split_count)

    def report_batch_split(self, regions: Sequence[Region]) -> None:
        self.regions.report_batch_split(regions)

    # -- GC (SafePoints) ------------------------------------------------------------------------
    @property
    def gc(self) -> GcState:
        return self.safe_points.gc

    async def update_gc_safe_point(self, safe_point: int) -> int:
        return await self.safe_points.update_gc_safe_point(safe_point)

    async def update_service_safe_point(
        self, service_id: bytes, ttl_s: int, safe_point: int
    ) -> ServiceSafePoint | None:
        return await self.safe_points.update_service_safe_point(service_id, ttl_s, safe_point)

    # -- global config (GlobalConfig) -------------------------------------------------------------
    @property
    def global_config(self) -> dict[str, bytes]:
        return self.global_configs.items

    @property
    def global_config_revision(self) -> int:
        return self.global_configs.revision

    @property
    def global_config_watchers(self) -> set[asyncio.Queue[int]]:
        return self.global_configs.watchers

    async def store_global_config(self, items: dict[str, bytes | None]) -> None:
        await self.global_configs.store(items)


def _always() -> bool:
    return True
