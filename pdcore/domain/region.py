"""Regions as PD sees them: immutable values built from heartbeats.

A `Region` never changes after it is built; a heartbeat makes a new one. Sizes are in
MiB like PD (the wire carries bytes; `size_mib_from_bytes` converts and floors a
non-empty region at 1 MiB).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import NamedTuple

MIB = 1 << 20


class PeerRole(enum.IntEnum):
    """Values of `metapb.PeerRole`."""

    VOTER = 0
    LEARNER = 1
    INCOMING_VOTER = 2
    DEMOTING_VOTER = 3


@dataclass(frozen=True, slots=True)
class Peer:
    id: int
    store_id: int
    role: PeerRole = PeerRole.VOTER
    is_witness: bool = False

    @property
    def is_learner(self) -> bool:
        return self.role == PeerRole.LEARNER

    @property
    def is_voter(self) -> bool:
        return self.role in (PeerRole.VOTER, PeerRole.INCOMING_VOTER)


class RegionEpoch(NamedTuple):
    """`conf_ver` grows with membership changes, `version` with splits and merges."""

    conf_ver: int
    version: int

    def is_stale_against(self, known: RegionEpoch) -> bool:
        """Older than `known` in either part: PD refuses such a report (stale epoch)."""
        return self.version < known.version or self.conf_ver < known.conf_ver


class PeerStats(NamedTuple):
    peer: Peer
    down_seconds: int


class FlowStats(NamedTuple):
    """Traffic a region leader reported for one heartbeat interval."""

    bytes_written: int = 0
    bytes_read: int = 0
    keys_written: int = 0
    keys_read: int = 0
    query_write: int = 0
    query_read: int = 0
    interval_s: int = 0


NO_FLOW = FlowStats()


def size_mib_from_bytes(size_bytes: int) -> int:
    """PD keeps MiB; any non-empty region counts as at least 1 MiB."""
    if size_bytes <= 0:
        return 0
    return max(1, size_bytes // MIB)


@dataclass(frozen=True, slots=True)
class Region:
    id: int
    start_key: bytes
    end_key: bytes
    epoch: RegionEpoch
    peers: tuple[Peer, ...]
    leader: Peer | None = None
    down_peers: tuple[PeerStats, ...] = ()
    pending_peers: tuple[Peer, ...] = ()
    approximate_size: int = 0  # MiB
    approximate_keys: int = 0
    flow: FlowStats = NO_FLOW
    term: int = 0
    cpu_usage: int = 0
    # Raw bytes of fields we pass through untouched (buckets, replication status).
    extra: bytes = field(default=b"", compare=False)

    # -- key range -------------------------------------------------------
    def contains(self, key: bytes) -> bool:
        return self.start_key <= key and (not self.end_key or key < self.end_key)

    # -- peers -----------------------------------------------------------
    def peer_on(self, store_id: int) -> Peer | None:
        for p in self.peers:
            if p.store_id == store_id:
                return p
        return None

    def peer_by_id(self, peer_id: int) -> Peer | None:
        for p in self.peers:
            if p.id == peer_id:
                return p
        return None

    @property
    def store_ids(self) -> frozenset[int]:
        return frozenset(p.store_id for p in self.peers)

    @property
    def leader_store_id(self) -> int:
        return self.leader.store_id if self.leader is not None else 0

    @property
    def voters(self) -> tuple[Peer, ...]:
        return tuple(p for p in self.peers if p.is_voter)

    @property
    def learners(self) -> tuple[Peer, ...]:
        return tuple(p for p in self.peers if p.is_learner)

    @property
    def in_joint_state(self) -> bool:
        """A joint membership change has been entered and not yet left."""
        return any(p.role in (PeerRole.INCOMING_VOTER, PeerRole.DEMOTING_VOTER) for p in self.peers)

    @property
    def followers(self) -> tuple[Peer, ...]:
        lid = self.leader.id if self.leader is not None else 0
        return tuple(p for p in self.peers if p.id != lid and p.is_voter)

    def is_pending(self, peer: Peer) -> bool:
        return any(p.id == peer.id for p in self.pending_peers)

    def is_down(self, peer: Peer) -> bool:
        return any(d.peer.id == peer.id for d in self.down_peers)

    @property
    def is_healthy(self) -> bool:
        return not self.down_peers and not self.pending_peers

    def with_(self, **changes: object) -> Region:
        return replace(self, **changes)  # type: ignore[arg-type]

    def same_meta(self, other: Region) -> bool:
        """True when only statistics differ: the heartbeat fast path."""
        return (
            self.epoch == other.epoch
            and self.leader == other.leader
            and self.peers == other.peers
            and self.down_peers == other.down_peers
            and self.pending_peers == other.pending_peers
            and self.start_key == other.start_key
            and self.end_key == other.end_key
        )


# Epoch bounds: no region sees 2^48 splits or conf changes, nor 2^20 between heartbeats.
MAX_EPOCH = (1 << 48) - 1
MAX_EPOCH_STEP = 1 << 20


def validate_region_shape(region: Region) -> str | None:
    """Return why a region is malformed, or None. Used for bootstrap and heartbeats."""
    if region.id == 0:
        return "region id must not be zero"
    if region.end_key and region.start_key >= region.end_key:
        return (
            f"region {region.id} start key {region.start_key.hex()} is not below "
            f"end key {region.end_key.hex()}"
        )
    if not region.peers:
        return f"region {region.id} has no peers"
    if region.epoch.conf_ver > MAX_EPOCH or region.epoch.version > MAX_EPOCH:
        return (
            f"region {region.id} epoch {tuple(region.epoch)} is beyond any real "
            f"region's ({MAX_EPOCH})"
        )
    seen_stores: set[int] = set()
    seen_ids: set[int] = set()
    for p in region.peers:
        if p.id == 0 or p.store_id == 0:
            return f"region {region.id} has a peer with a zero id or store id"
        if p.store_id in seen_stores:
            return f"region {region.id} has two peers on store {p.store_id}"
        if p.id in seen_ids:
            return f"region {region.id} has two peers with id {p.id}"
        seen_stores.add(p.store_id)
        seen_ids.add(p.id)
    return None


def epoch_jump(known: RegionEpoch, reported: RegionEpoch) -> str | None:
    """Why a reported epoch cannot follow the known one, or None. Each split, merge or
    conf change moves it by a little; a jump of millions would make every later
    genuine heartbeat of the region look stale."""
    if (
        reported.conf_ver - known.conf_ver > MAX_EPOCH_STEP
        or reported.version - known.version > MAX_EPOCH_STEP
    ):
        return (
            f"epoch {tuple(reported)} jumps more than {MAX_EPOCH_STEP} past the known "
            f"{tuple(known)}"
        )
    return None
