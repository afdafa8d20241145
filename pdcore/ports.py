"""The narrow interfaces (ports) the core and the PD service need from the outside.

Every port has an in-memory fake (`pdcore.adapters.storage.memory`, fake clocks in
tests) so the core is tested without sockets, files or Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.commands import RegionCommand
from pdcore.domain.config import ClusterConfig
from pdcore.domain.gc import GcState
from pdcore.domain.keyspace import Keyspace
from pdcore.domain.mvcc import Record
from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.scheduling.rule_config import RuleSet


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time, and waiting for it. Loops outside the pure core sleep through their clock,
    so the simulator can run them on virtual time (pdcore.adapters.clock)."""

    def now_s(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic_s(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        """Call `fn` once, `delay_s` of this clock's seconds from now."""
        ...


@dataclass(slots=True)
class PersistedState:
    """Everything durable about a cluster, as loaded at start."""

    cluster_id: int = 0
    meta: ClusterMeta | None = None  # None until bootstrap
    stores: dict[int, Store] = field(default_factory=dict)
    id_mark: int = 0
    tso_window: int = 0
    gc: GcState = field(default_factory=GcState)
    config: ClusterConfig | None = None
    global_config: dict[str, bytes] = field(default_factory=dict)


class MetaStore(Protocol):
    """Durable cluster metadata. Marks are updated by compare-and-swap: a write whose
    `expected` value is not the stored one raises `CasConflict` and changes nothing."""

    async def load(self) -> PersistedState: ...

    async def init_cluster_id(self, candidate: int) -> int:
        """Store `candidate` unless an id exists; return the id in force."""
        ...

    async def bootstrap(self, meta: ClusterMeta, store: Store, region: Region) -> None:
        """Atomically record cluster meta, first store and first region; raises
        AlreadyBootstrapped if the cluster exists."""
        ...

    async def save_store(self, store: Store) -> None: ...

    async def cas_id_mark(self, expected: int, new: int) -> None: ...

    async def cas_tso_window(self, expected: int, new: int) -> None: ...

    async def save_gc(self, gc: GcState) -> None: ...

    async def save_meta(self, meta: ClusterMeta) -> None: ...

    async def save_config(self, config: ClusterConfig) -> None: ...

    async def save_global_config(self, items: dict[str, bytes | None]) -> None: ...

    async def load_keyspaces(self) -> tuple[int, list[Keyspace]]:
        """The keyspace id mark (the highest id ever handed out) and every keyspace."""
        ...

    async def cas_keyspace_mark(self, expected: int, new: int) -> None: ...

    async def save_keyspace(self, keyspace: Keyspace) -> None:
        """Create or replace the keyspace with this id."""
        ...

    async def close(self) -> None: ...


class RegionStorage(Protocol):
    """Where regions are kept across restarts (a local file; never the API server)."""

    async def load_regions(self) -> list[Region]: ...

    async def save_regions(self, changed: Sequence[Region], deleted: Iterable[int]) -> None: ...


class RegionSource(Protocol):
    """The region view scheduling reads (authoritative on the leader, synced elsewhere)."""

    def get_region(self, region_id: int) -> Region | None: ...

    def regions(self) -> Iterable[Region]: ...


class StepSink(Protocol):
    """Delivers a command to the heartbeat stream of the store holding the region's
    leader: directly in embedded mode, through that store's sidecar on Kubernetes.
    Returns False when no stream for that store is connected."""

    def send(self, store_id: int, command: RegionCommand) -> bool: ...


@dataclass(slots=True)
class EtcdState:
    """The etcd API's durable state: the revisions, the kept records, the leases."""

    revision: int = 0
    compact_revision: int = 0
    records: list[Record] = field(default_factory=list)
    leases: dict[int, int] = field(default_factory=dict)  # id -> granted TTL


@dataclass(slots=True)
class EtcdChange:
    """One atomic write: records added and compacted away, leases granted/revoked."""

    revision: int
    added: Sequence[Record] = ()
    dropped: Sequence[tuple[int, int]] = ()  # (revision, sub) of compacted records
    compact_revision: int | None = None
    leases_granted: dict[int, int] = field(default_factory=dict)
    leases_revoked: Sequence[int] = ()


class EtcdStore(Protocol):
    """Where the etcd API keeps its keys (the embedded store; never the region file)."""

    async def load_etcd(self) -> EtcdState: ...

    async def save_etcd(self, change: EtcdChange) -> None:
        """Apply `change` all or nothing."""
        ...


class RuleStore(Protocol):
    """Where the embedded mode keeps the placement rules written over PD's API (on
    Kubernetes the rules are PlacementRule objects instead)."""

    async def load_rules(self) -> RuleSet | None:
        """The rules and configured groups last saved; None if none ever were."""
        ...

    async def save_rules(self, rules: RuleSet) -> None:
        """Replace the saved rules and groups, all or nothing."""
        ...
