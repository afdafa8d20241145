"""Operator steps: each knows the command that performs it, when a region heartbeat
shows it done, how long it may take, and which stores it loads.

Timeouts follow PD: fast steps max(60 s, 0.6 s/MiB), slow steps (snapshots)
max(10 min, 6 s/MiB), merge 10x fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdcore.domain.commands import (
    ChangePeer,
    ChangePeerV2,
    CommandBody,
    ConfChangeType,
    Merge,
    SplitPolicy,
    SplitRegion,
    TransferLeader,
)
from pdcore.domain.region import Peer, PeerRole, Region


def fast_timeout(size_mib: int) -> float:
    return max(60.0, 0.6 * size_mib)


def slow_timeout(size_mib: int) -> float:
    return max(600.0, 6.0 * size_mib)


@dataclass(frozen=True, slots=True)
class TransferLeaderStep:
    from_store: int
    to_store: int
    slow = False

    def is_finished(self, region: Region) -> bool:
        return region.leader_store_id == self.to_store

    def command(self, region: Region) -> CommandBody | None:
        peer = region.peer_on(self.to_store)
        if peer is None or not peer.is_voter:
            return None
        return TransferLeader(peer, (peer,))

    def timeout(self, size: int) -> float:
        return fast_timeout(size)

    def describe(self) -> str:
        return f"transfer leader from store {self.from_store} to store {self.to_store}"


@dataclass(frozen=True, slots=True)
class AddLearnerStep:
    to_store: int
    peer_id: int
    slow = True

    def is_finished(self, region: Region) -> bool:
        peer = region.peer_on(self.to_store)
        return peer is not None and peer.id == self.peer_id and not region.is_pending(peer)

    def command(self, region: Region) -> CommandBody | None:
        if region.peer_on(self.to_store) is not None:
            return None  # already added; waiting for it to catch up
        return ChangePeer(
            ConfChangeType.ADD_LEARNER_NODE, Peer(self.peer_id, self.to_store, PeerRole.LEARNER)
        )

    def timeout(self, size: int) -> float:
        return slow_timeout(size)

    def describe(self) -> str:
        return f"add learner peer {self.peer_id} on store {self.to_store}"


@dataclass(frozen=True, slots=True)
class PromoteLearnerStep:
    to_store: int
    peer_id: int
    slow = False

    def is_finished(self, region: Region) -> bool:
        peer = region.peer_on(self.to_store)
        return peer is not None and peer.role == PeerRole.VOTER

    def command(self, region: Region) -> CommandBody | None:
        return ChangePeer(ConfChangeType.ADD_NODE, Peer(self.peer_id, self.to_store))

    def timeout(self, size: int) -> float:
        return fast_timeout(size)

    def describe(self) -> str:
        return f"promote learner peer {self.peer_id} on store {self.to_store} to voter"


@dataclass(frozen=True, slots=True)
class RemovePeerStep:
    from_store: int
    slow = False

    def is_finished(self, region: Region) -> bool:
        return region.peer_on(self.from_store) is None

    def command(self, region: Region) -> CommandBody | None:
        peer = region.peer_on(self.from_store)
        if peer is None or region.leader_store_id == self.from_store:
            return None  # the leader cannot remove itself
        return ChangePeer(ConfChangeType.REMOVE_NODE, peer)

    def timeout(self, size: int) -> float:
        return fast_timeout(size)

    def describe(self) -> str:
        return f"remove peer on store {self.from_store}"


@dataclass(frozen=True, slots=True)
class JointEnterStep:
    """Enter joint consensus: promote learners and demote voters in one change."""

    promote: tuple[Peer, ...]
    demote: tuple[Peer, ...]
    slow = False

    def is_finished(self, region: Region) -> bool:
        for p in self.promote:
            got = region.peer_on(p.store_id)
            if got is None or got.role not in (PeerRole.INCOMING_VOTER, PeerRole.VOTER):
                return False
        for p in self.demote:
            got = region.peer_on(p.store_id)
            if got is not None and got.role not in (PeerRole.DEMOTING_VOTER, PeerRole.LEARNER):
                return False
        return True

    def command(self, region: Region) -> CommandBody | None:
        changes = [
            ChangePeer(ConfChangeType.ADD_NODE, Peer(p.id, p.store_id)) for p in self.promote
        ]
        changes += [
            ChangePeer(ConfChangeType.ADD_LEARNER_NODE, Peer(p.id, p.store_id, PeerRole.LEARNER))
            for p in self.demote
        ]
        return ChangePeerV2(tuple(changes))

    def timeout(self, size: int) -> float:
        return fast_timeout(size) * (len(self.promote) + len(self.demote) + 1)

    def describe(self) -> str:
        return (
            "enter joint state: promote "
            + ",".join(str(p.store_id) for p in self.promote)
            + " demote "
            + ",".join(str(p.store_id) for p in self.demote)
        )


@dataclass(frozen=True, slots=True)
class JointLeaveStep:
    promote: tuple[Peer, ...]
    demote: tuple[Peer, ...]
    slow = False

    def is_finished(self, region: Region) -> bool:
        if region.in_joint_state:
            return False
        return all(
            (got := region.peer_on(p.store_id)) is not None and got.role == PeerRole.VOTER
            for p in self.promote
        )

    def command(self, region: Region) -> CommandBody | None:
        return ChangePeerV2(())

    def timeout(self, size: int) -> float:
        return fast_timeout(size) * (len(self.promote) + len(self.demote) + 1)

    def describe(self) -> str:
        return "leave joint state"


@dataclass(frozen=True, slots=True)
class MergeStep:
    """Merge `source` into `target`. The source's operator never sees this step finish:
    the source region disappears. The target's (passive) step finishes when its range
    has grown over the source."""

    source_id: int
    target: Region
    passive: bool
    wait_s: float = 0.0  # the target also waits for the source's peer moves
    slow = False

    def is_finished(self, region: Region) -> bool:
        if not self.passive:
            return False
        t = self.target
        return region.epoch.version > t.epoch.version and (
            region.start_key != t.start_key or region.end_key != t.end_key
        )

    def command(self, region: Region) -> CommandBody | None:
        return None if self.passive else Merge(self.target)

    def timeout(self, size: int) -> float:
        return fast_timeout(size) * 10 + self.wait_s

    def describe(self) -> str:
        role = "target" if self.passive else "source"
        return f"merge region {self.source_id} into {self.target.id} ({role})"


@dataclass(frozen=True, slots=True)
class SplitStep:
    start_key: bytes
    end_key: bytes
    policy: SplitPolicy
    keys: tuple[bytes, ...] = ()
    slow = False

    def is_finished(self, region: Region) -> bool:
        return region.start_key != self.start_key or region.end_key != self.end_key

    def command(self, region: Region) -> CommandBody | None:
        return SplitRegion(self.policy, self.keys)

    def timeout(self, size: int) -> float:
        return fast_timeout(size)

    def describe(self) -> str:
        return f"split region ({self.policy.name.lower()})"


Step = (
    TransferLeaderStep
    | AddLearnerStep
    | PromoteLearnerStep
    | RemovePeerStep
    | JointEnterStep
    | JointLeaveStep
    | MergeStep
    | SplitStep
)
