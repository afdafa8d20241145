"""StoreRegistry: the cluster's stores — registration (PutStore), labels and states,
heartbeats, burying empty offline stores, and each store's min resolved ts.

Every change of a store's metadata is saved through `MetaStore` before it is answered,
one write per store at a time and always of the latest state. Heartbeat figures live
in memory and are saved at a bounded rate, behind the heartbeat.
"""

from __future__ import annotations

import asyncio
import logging

from pdcore.domain.errors import InvalidValue, PdError, StoreTombstone
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import (
    NodeState,
    Store,
    StoreState,
    StoreStats,
    parse_version,
    validate_store_shape,
)
from pdcore.service.member_state import MemberState

log = logging.getLogger("kubepd.node")

INIT_CLUSTER_REGION_THRESHOLD = 100
HEARTBEAT_PERSIST_S = 60.0  # a store's heartbeat time is saved at most this often


class StoreRegistry:
    def __init__(self, member: MemberState, tree: RegionTree) -> None:
        self.member = member
        self.tree = tree  # for region counts: burying, taking offline, Serving
        self.by_id: dict[int, Store] = {}
        self.min_resolved_ts: dict[int, int] = {}
        self._persisted_at: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._persisting: dict[int, asyncio.Task[None]] = {}

    def load(self, stores: dict[int, Store]) -> None:
        self.by_id = dict(stores)

    def stop(self) -> None:
        for t in list(self._persisting.values()):
            t.cancel()

    # -- reads ---------------------------------------------------------------------
    def stores(self) -> list[Store]:
        return list(self.by_id.values())

    def get_store(self, store_id: int) -> Store | None:
        return self.by_id.get(store_id)

    def require_store(self, store_id: int) -> Store:
        self.member.require_bootstrapped()
        store = self.by_id.get(store_id)
        if store is None:
            raise PdError(f"invalid store ID {store_id}, not found")
        return store

    def cluster_version(self) -> str:
        versions = [
            (v, s.version)
            for s in self.by_id.values()
            if not s.is_tombstone and (v := parse_version(s.version)) is not None
        ]
        return min(versions)[1].lstrip("v") if versions else "8.5.0"

    # -- writes --------------------------------------------------------------------
    def add_first(self, store: Store) -> None:
        """The bootstrap store (saved with the cluster's bootstrap)."""
        self.by_id[store.id] = store

    async def put_store(self, store: Store) -> Store:
        self.member.check_serving()
        self.member.require_bootstrapped()
        if store.id == 0:
            raise PdError("invalid put store request: store id is zero")
        if not store.address:
            raise PdError(f"invalid put store request: store {store.id} has no address")
        if store.version and parse_version(store.version) is None:
            raise PdError(f"invalid put store request: version {store.version!r} is not semver")
        for other in self.by_id.values():
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
        old = self.by_id.get(store.id)
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
        await self._save(store)
        return store

    async def set_store_labels(self, store_id: int, labels: dict[str, str]) -> Store:
        """Replace a store's labels (PutStore merges; the API can also delete one)."""
        self.member.check_serving()
        store = self.require_store(store_id)
        if store.is_tombstone:
            raise StoreTombstone(f"store {store_id} is tombstone")
        new = store.with_(labels=tuple(sorted(labels.items())))
        await self._save(new)
        return new

    async def set_store_state(self, store_id: int, state: StoreState, force: bool = False) -> Store:
        """Up <-> Offline from the API; Tombstone only once no region is left."""
        self.member.check_serving()
        store = self.require_store(store_id)
        if store.is_tombstone:
            raise StoreTombstone(f"store {store_id} is tombstone")
        max_replicas = self.member.config.replication.max_replicas
        if state == StoreState.OFFLINE and not store.is_offline:
            up = [s for s in self.by_id.values() if s.is_up and s.id != store_id]
            if len(up) < max_replicas and not force:
                raise PdError(
                    f"cannot take store {store_id} offline: only {len(up)} Up stores would "
                    f"remain, fewer than max-replicas {max_replicas}"
                )
        if state == StoreState.TOMBSTONE and self.tree.store_stats(store_id).region_count > 0:
            raise PdError(f"store {store_id} still has regions; it cannot be buried")
        new = store.with_state(state).with_(
            physically_destroyed=store.physically_destroyed or force
        )
        await self._save(new)
        log.info("store state changed", extra={"store": store_id, "state": state.name})
        return new

    async def bury_empty_offline_stores(self) -> list[int]:
        """Offline stores with no region left become Tombstone (PD's checkStores)."""
        buried = []
        for s in list(self.by_id.values()):
            if s.is_offline and self.tree.store_stats(s.id).region_count == 0:
                await self.set_store_state(s.id, StoreState.TOMBSTONE)
                buried.append(s.id)
        return buried

    async def _save(self, store: Store) -> None:
        async with self._lock(store.id):
            await self.member.meta.save_store(store)
            self.by_id[store.id] = store

    # -- heartbeats ------------------------------------------------------------------
    async def store_heartbeat(self, store_id: int, stats: StoreStats) -> Store:
        self.member.check_serving()
        self.member.require_bootstrapped()
        store = self.by_id.get(store_id)
        if store is None:
            raise PdError(f"store {store_id} not found")
        if store.is_tombstone:
            raise StoreTombstone(f"store {store_id} is tombstone")
        self.member.stats.store_heartbeats += 1
        clock = self.member.clock
        now = clock.now_s()
        node_state = store.node_state
        if node_state == NodeState.PREPARING and self._ready_to_serve(store, now):
            node_state = NodeState.SERVING
        new = store.with_(stats=stats, last_heartbeat_ns=int(now * 1e9), node_state=node_state)
        self.by_id[store_id] = new
        # Heartbeat time is slow-moving state: persist it at a bounded rate.
        last = self._persisted_at.get(store_id, 0.0)
        mono = clock.monotonic_s()
        if node_state != store.node_state or mono - last > HEARTBEAT_PERSIST_S:
            self._persisted_at[store_id] = mono
            self._persist_later(store_id)
        return new

    def _lock(self, store_id: int) -> asyncio.Lock:
        """Writes of one store's metadata, one at a time, each of the latest state: a
        heartbeat's write can then never land after, and undo, a state change."""
        return self._locks.setdefault(store_id, asyncio.Lock())

    def _persist_later(self, store_id: int) -> None:
        """Heartbeat figures are already in memory; writing them must not hold up TiKV's
        heartbeat while the API server (or its etcd) is slow or away."""
        if store_id not in self._persisting:
            task = asyncio.get_running_loop().create_task(self._persist(store_id))
            self._persisting[store_id] = task
            task.add_done_callback(lambda _: self._persisting.pop(store_id, None))

    async def _persist(self, store_id: int) -> None:
        try:
            async with self._lock(store_id):
                store = self.by_id.get(store_id)
                if store is not None:
                    await self.member.meta.save_store(store)
        except Exception as e:
            self._persisted_at.pop(store_id, None)  # again on the next heartbeat
            log.info("store %d heartbeat not persisted: %s", store_id, e)

    def _ready_to_serve(self, store: Store, now_s: float) -> bool:
        if len(self.tree) < INIT_CLUSTER_REGION_THRESHOLD:
            return True
        if store.start_timestamp and now_s - store.start_timestamp >= (
            self.member.config.schedule.max_store_preparing_time_s
        ):
            return True
        up = [s for s in self.by_id.values() if s.is_up]
        total = sum(self.tree.store_stats(s.id).region_size for s in up)
        share = total / max(1, len(up))
        return self.tree.store_stats(store.id).region_size >= 0.9 * share

    # -- min resolved ts ---------------------------------------------------------------
    def report_min_resolved_ts(self, store_id: int, ts: int) -> None:
        self.require_store(store_id)
        if ts > self.min_resolved_ts.get(store_id, 0):
            self.min_resolved_ts[store_id] = ts

    def cluster_min_resolved_ts(self) -> int:
        live = [self.min_resolved_ts.get(s.id, 0) for s in self.by_id.values() if s.is_up]
        return min(live) if live else 0
