"""The ground truth of the simulated cluster: regions as TiKV holds them.

Epochs change exactly as TiKV changes them: a conf change (add, promote, remove, joint
enter/leave) bumps `conf_ver`; a split or merge bumps `version`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pdcore.domain.region import Peer, PeerRole, Region, RegionEpoch

MIB = 1 << 20


@dataclass
class SimRegion:
    id: int
    start: bytes
    end: bytes
    peers: list[Peer]
    leader_id: int
    conf_ver: int = 1
    version: int = 1
    size_mib: int = 64
    keys: int = 640_000
    pending: set[int] = field(default_factory=set)  # peer ids still applying a snapshot
    write_rate: float = 0.0  # bytes/s while a hot spot is on
    read_rate: float = 0.0

    @property
    def leader(self) -> Peer:
        for p in self.peers:
            if p.id == self.leader_id:
                return p
        raise LookupError(f"region {self.id} has no leader peer {self.leader_id}")

    @property
    def leader_store(self) -> int:
        return self.leader.store_id

    def peer_on(self, store_id: int) -> Peer | None:
        for p in self.peers:
            if p.store_id == store_id:
                return p
        return None

    def epoch(self) -> RegionEpoch:
        return RegionEpoch(self.conf_ver, self.version)

    def to_region(self, interval_s: int = 0) -> Region:
        from pdcore.domain.region import FlowStats

        return Region(
            id=self.id,
            start_key=self.start,
            end_key=self.end,
            epoch=self.epoch(),
            peers=tuple(self.peers),
            leader=self.leader,
            pending_peers=tuple(p for p in self.peers if p.id in self.pending),
            approximate_size=self.size_mib,
            approximate_keys=self.keys,
            flow=FlowStats(
                bytes_written=int(self.write_rate * interval_s),
                bytes_read=int(self.read_rate * interval_s),
                keys_written=int(self.write_rate * interval_s / 1024),
                keys_read=int(self.read_rate * interval_s / 1024),
                interval_s=interval_s,
            ),
        )

    # -- conf changes as raft applies them ------------------------------------------------
    def add_learner(self, peer: Peer) -> bool:
        if self.peer_on(peer.store_id) is not None:
            return False
        self.peers.append(Peer(peer.id, peer.store_id, PeerRole.LEARNER))
        self.pending.add(peer.id)
        self.conf_ver += 1
        return True

    def set_role(self, store_id: int, role: PeerRole) -> bool:
        for i, p in enumerate(self.peers):
            if p.store_id == store_id:
                if p.role == role:
                    return False
                self.peers[i] = Peer(p.id, p.store_id, role)
                return True
        return False

    def promote(self, store_id: int) -> bool:
        changed = self.set_role(store_id, PeerRole.VOTER)
        if changed:
            self.conf_ver += 1
        return changed

    def remove(self, store_id: int) -> bool:
        p = self.peer_on(store_id)
        if p is None or p.id == self.leader_id:
            return False
        self.peers.remove(p)
        self.pending.discard(p.id)
        self.conf_ver += 1
        return True

    def enter_joint(self, promote: list[int], demote: list[int]) -> bool:
        """Enter a joint state, or refuse and change nothing (raft refuses to demote the
        leader)."""
        if self.leader_store in demote:
            return False
        for s in promote:
            self.set_role(s, PeerRole.INCOMING_VOTER)
        for s in demote:
            self.set_role(s, PeerRole.DEMOTING_VOTER)
        self.conf_ver += 1
        return True

    def leave_joint(self) -> bool:
        changed = False
        for p in list(self.peers):
            if p.role == PeerRole.INCOMING_VOTER:
                self.set_role(p.store_id, PeerRole.VOTER)
                changed = True
            elif p.role == PeerRole.DEMOTING_VOTER:
                self.set_role(p.store_id, PeerRole.LEARNER)
                changed = True
        if changed:
            self.conf_ver += 1
        return changed
