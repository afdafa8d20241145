"""Commands PD sends to a region's leader on its store's heartbeat stream.

Wire-agnostic: the gRPC adapter turns a `RegionCommand` into a
`pdpb.RegionHeartbeatResponse`. Exactly one body per command, as on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pdcore.domain.region import Peer, Region, RegionEpoch


class ConfChangeType(enum.IntEnum):
    """Values of `eraftpb.ConfChangeType`."""

    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER_NODE = 2


class SplitPolicy(enum.IntEnum):
    """Values of `pdpb.CheckPolicy`."""

    SCAN = 0
    APPROXIMATE = 1
    USEKEY = 2


@dataclass(frozen=True, slots=True)
class ChangePeer:
    change_type: ConfChangeType
    peer: Peer


@dataclass(frozen=True, slots=True)
class ChangePeerV2:
    """Joint consensus: several changes entered together (empty = leave joint state)."""

    changes: tuple[ChangePeer, ...]


@dataclass(frozen=True, slots=True)
class TransferLeader:
    peer: Peer
    peers: tuple[Peer, ...] = ()  # candidate targets, newer TiKV picks one


@dataclass(frozen=True, slots=True)
class Merge:
    target: Region


@dataclass(frozen=True, slots=True)
class SplitRegion:
    policy: SplitPolicy
    keys: tuple[bytes, ...] = ()


CommandBody = ChangePeer | ChangePeerV2 | TransferLeader | Merge | SplitRegion


@dataclass(frozen=True, slots=True)
class RegionCommand:
    region_id: int
    epoch: RegionEpoch
    target_peer: Peer | None  # the leader PD believes in
    body: CommandBody
