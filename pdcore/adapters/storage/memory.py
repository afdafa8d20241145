"""In-memory MetaStore and RegionStorage: the fake every core test uses.

Behaves like the durable stores, including compare-and-swap conflicts, so tests of
the service catch lost updates. `fail_writes` lets a test simulate a storage outage.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import AlreadyBootstrapped, CasConflict
from pdcore.domain.gc import GcState
from pdcore.domain.keyspace import Keyspace
from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.ports import EtcdChange, EtcdState, PersistedState
from pdcore.scheduling.rule_config import RuleSet


class MemoryStore:
    def __init__(self) -> None:
        self.state = PersistedState()
        self.regions: dict[int, Region] = {}
        self.keyspaces: dict[int, Keyspace] = {}
        self.keyspace_mark = 0
        self.etcd = EtcdState()
        self.rules: RuleSet | None = None
        self.fail_writes = False
        self.writes = 0

    def _write(self) -> None:
        if self.fail_writes:
            raise OSError("storage unavailable (simulated)")
        self.writes += 1

    async def load(self) -> PersistedState:
        return copy.deepcopy(self.state)

    async def init_cluster_id(self, candidate: int) -> int:
        if not self.state.cluster_id:
            self._write()
            self.state.cluster_id = candidate
        return self.state.cluster_id

    async def bootstrap(self, meta: ClusterMeta, store: Store, region: Region) -> None:
        if self.state.meta is not None:
            raise AlreadyBootstrapped()
        self._write()
        self.state.meta = meta
        self.state.stores[store.id] = store
        self.regions[region.id] = region

    async def save_store(self, store: Store) -> None:
        self._write()
        self.state.stores[store.id] = store

    async def cas_id_mark(self, expected: int, new: int) -> None:
        if self.state.id_mark != expected:
            raise CasConflict(f"id mark is {self.state.id_mark}, expected {expected}")
        self._write()
        self.state.id_mark = new

    async def cas_tso_window(self, expected: int, new: int) -> None:
        if self.state.tso_window != expected:
            raise CasConflict(f"tso window is {self.state.tso_window}, expected {expected}")
        self._write()
        self.state.tso_window = new

    async def save_gc(self, gc: GcState) -> None:
        self._write()
        self.state.gc = copy.deepcopy(gc)

    async def save_meta(self, meta: ClusterMeta) -> None:
        self._write()
        self.state.meta = meta

    async def save_config(self, config: ClusterConfig) -> None:
        self._write()
        self.state.config = config

    async def save_global_config(self, items: dict[str, bytes | None]) -> None:
        self._write()
        for k, v in items.items():
            if v is None:
                self.state.global_config.pop(k, None)
            else:
                self.state.global_config[k] = v

    async def load_keyspaces(self) -> tuple[int, list[Keyspace]]:
        return self.keyspace_mark, list(self.keyspaces.values())

    async def cas_keyspace_mark(self, expected: int, new: int) -> None:
        if self.keyspace_mark != expected:
            raise CasConflict(f"keyspace mark is {self.keyspace_mark}, expected {expected}")
        self._write()
        self.keyspace_mark = new

    async def save_keyspace(self, keyspace: Keyspace) -> None:
        self._write()
        self.keyspaces[keyspace.id] = keyspace

    async def load_rules(self) -> RuleSet | None:
        return self.rules

    async def save_rules(self, rules: RuleSet) -> None:
        self._write()
        self.rules = rules  # a RuleSet is never changed in place

    async def load_etcd(self) -> EtcdState:
        return copy.deepcopy(self.etcd)

    async def save_etcd(self, change: EtcdChange) -> None:
        self._write()
        if change.dropped:
            gone = set(change.dropped)
            self.etcd.records = [r for r in self.etcd.records if (r.revision, r.sub) not in gone]
        self.etcd.records.extend(change.added)
        self.etcd.revision = change.revision
        if change.compact_revision is not None:
            self.etcd.compact_revision = change.compact_revision
        self.etcd.leases.update(change.leases_granted)
        for lease_id in change.leases_revoked:
            self.etcd.leases.pop(lease_id, None)

    async def load_regions(self) -> list[Region]:
        return list(self.regions.values())

    async def save_regions(self, changed: Sequence[Region], deleted: Iterable[int]) -> None:
        self._write()
        for rid in deleted:
            self.regions.pop(rid, None)
        for r in changed:
            self.regions[r.id] = r

    async def close(self) -> None:
        return None
