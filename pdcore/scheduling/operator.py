"""Operators: an ordered list of steps for one region, with kind, priority, reason and
a status machine (CREATED → STARTED → SUCCESS | CANCELED | REPLACED | TIMEOUT, or
CREATED → CANCELED | EXPIRED)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from pdcore.domain.region import Peer, PeerRole, Region, RegionEpoch
from pdcore.scheduling.steps import (
    AddLearnerStep,
    JointEnterStep,
    JointLeaveStep,
    MergeStep,
    PromoteLearnerStep,
    RemovePeerStep,
    Step,
    TransferLeaderStep,
)

CREATED_EXPIRE_S = 3.0


class OpKind(enum.IntFlag):
    """Kinds as flags; an operator counts against the limit of its most urgent kind."""

    ADMIN = 1
    MERGE = 2
    REPLICA = 4
    SPLIT = 8
    HOT_REGION = 16
    REGION = 32
    LEADER = 64

    def label(self) -> str:
        return ",".join(k.name.lower().replace("_", "-") for k in OpKind if k & self)  # type: ignore[union-attr]


class Priority(enum.IntEnum):
    LOW = 0
    MEDIUM = 1
    HIGH = 2
    URGENT = 3


class OpStatus(enum.Enum):
    CREATED = "created"
    STARTED = "started"
    SUCCESS = "success"
    CANCELED = "canceled"
    REPLACED = "replaced"
    TIMEOUT = "timeout"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        return self not in (OpStatus.CREATED, OpStatus.STARTED)


@dataclass
class Operator:
    desc: str
    region_id: int
    epoch: RegionEpoch
    kind: OpKind
    steps: list[Step]
    reason: str = ""
    priority: Priority = Priority.MEDIUM
    region_size: int = 0
    status: OpStatus = OpStatus.CREATED
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    step_index: int = 0
    step_started_at: float = 0.0
    last_sent_at: float = -1e18
    end_reason: str = ""
    id: int = 0
    scheduler: str = ""
    influence: dict[int, StoreInfluence] = field(default_factory=dict)

    @property
    def current(self) -> Step | None:
        return self.steps[self.step_index] if self.step_index < len(self.steps) else None

    @property
    def total_timeout(self) -> float:
        return sum(s.timeout(self.region_size) for s in self.steps)

    def advance(self, region: Region) -> bool:
        """Skip the steps the region shows as done; True once every step is done."""
        while self.step_index < len(self.steps) and self.steps[self.step_index].is_finished(region):
            self.step_index += 1
        return self.step_index >= len(self.steps)

    def finish(self, status: OpStatus, now: float, reason: str = "") -> None:
        if self.status.finished:
            return
        self.status = status
        self.finished_at = now
        self.end_reason = reason

    def summary(self) -> dict[str, object]:
        return {
            "id": self.id,
            "desc": self.desc,
            "region_id": self.region_id,
            "kind": self.kind.label(),
            "priority": self.priority.name.lower(),
            "status": self.status.value,
            "reason": self.reason,
            "end_reason": self.end_reason,
            "scheduler": self.scheduler,
            "step": self.step_index,
            "steps": [s.describe() for s in self.steps],
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


@dataclass(slots=True)
class StoreInfluence:
    """What an operator will change on a store when it completes."""

    region_size: int = 0
    region_count: int = 0
    leader_size: int = 0
    leader_count: int = 0
    add_peer: int = 0
    remove_peer: int = 0


def compute_influence(region: Region, steps: list[Step]) -> dict[int, StoreInfluence]:
    out: dict[int, StoreInfluence] = {}

    def of(store: int) -> StoreInfluence:
        return out.setdefault(store, StoreInfluence())

    size = region.approximate_size
    for step in steps:
        if isinstance(step, TransferLeaderStep):
            of(step.from_store).leader_count -= 1
            of(step.from_store).leader_size -= size
            of(step.to_store).leader_count += 1
            of(step.to_store).leader_size += size
        elif isinstance(step, AddLearnerStep):
            of(step.to_store).region_count += 1
            of(step.to_store).region_size += size
            of(step.to_store).add_peer += 1
        elif isinstance(step, RemovePeerStep):
            of(step.from_store).region_count -= 1
            of(step.from_store).region_size -= size
            of(step.from_store).remove_peer += 1
    return out


# -- builders: the step order for a desired end state --------------------------------------
def transfer_leader(
    region: Region,
    to_store: int,
    reason: str,
    kind: OpKind = OpKind.LEADER,
    priority: Priority = Priority.MEDIUM,
) -> Operator:
    steps: list[Step] = [TransferLeaderStep(region.leader_store_id, to_store)]
    return _op("transfer-leader", region, kind, steps, reason, priority)


def move_peer(
    region: Region,
    from_store: int,
    to_store: int,
    new_peer_id: int,
    reason: str,
    kind: OpKind = OpKind.REGION,
    priority: Priority = Priority.MEDIUM,
    joint: bool = True,
) -> Operator:
    """Replace the peer on `from_store` with a new one on `to_store`."""
    steps: list[Step] = [AddLearnerStep(to_store, new_peer_id)]
    steps += _replace_steps(region, from_store, Peer(new_peer_id, to_store), joint)
    return _op("move-peer", region, kind, steps, reason, priority)


def replace_with_learner(
    region: Region, from_store: int, learner: Peer, reason: str, joint: bool = True
) -> Operator:
    """Replace the peer on `from_store` with the region's existing learner `learner`
    (PD's replace-down-peer-with-orphan-peer): promote it, then remove the old peer."""
    steps = _replace_steps(region, from_store, Peer(learner.id, learner.store_id), joint)
    kind, name = OpKind.REPLICA, "replace-down-peer-with-orphan-peer"
    return _op(name, region, kind, steps, reason, Priority.HIGH)


def _replace_steps(region: Region, from_store: int, new: Peer, joint: bool) -> list[Step]:
    old = region.peer_on(from_store)
    assert old is not None
    steps: list[Step] = []
    if region.leader_store_id == from_store:
        others = [p for p in region.voters if p.store_id != from_store]
        if others:
            steps.append(TransferLeaderStep(from_store, others[0].store_id))
    if joint and old.is_voter:
        steps += [JointEnterStep((new,), (old,)), JointLeaveStep((new,), (old,))]
    else:
        steps.append(PromoteLearnerStep(new.store_id, new.id))
    steps.append(RemovePeerStep(from_store))
    return steps


def add_peer(
    region: Region,
    to_store: int,
    new_peer_id: int,
    reason: str,
    learner: bool = False,
    kind: OpKind = OpKind.REPLICA,
    priority: Priority = Priority.HIGH,
) -> Operator:
    steps: list[Step] = [AddLearnerStep(to_store, new_peer_id)]
    if not learner:
        steps.append(PromoteLearnerStep(to_store, new_peer_id))
    return _op(
        "add-rule-peer" if not learner else "add-learner", region, kind, steps, reason, priority
    )


def remove_peer(
    region: Region,
    from_store: int,
    reason: str,
    kind: OpKind = OpKind.REPLICA,
    priority: Priority = Priority.HIGH,
) -> Operator:
    steps: list[Step] = []
    if region.leader_store_id == from_store:
        others = [p for p in region.voters if p.store_id != from_store]
        if not others:
            raise ValueError("cannot remove the only voter")
        steps.append(TransferLeaderStep(from_store, others[0].store_id))
    steps.append(RemovePeerStep(from_store))
    return _op("remove-peer", region, kind, steps, reason, priority)


def merge_region(
    source: Region,
    target: Region,
    new_peer_id: Callable[[], int | None],
    reason: str,
    joint: bool = True,
    kind: OpKind = OpKind.MERGE,
) -> tuple[Operator, Operator] | None:
    """The two operators of merging `source` into its neighbour `target` (PD's
    merge-region): the source first moves its peers onto the target's stores, one store
    at a time, then merges; the target waits (passive) for as long as that can take.
    None if the regions cannot be matched (other peer counts, learners, or no id)."""
    if len(source.peers) != len(target.peers) or source.learners or target.learners:
        return None
    have, want = source.store_ids, target.store_ids
    voters = set(have)
    leader = source.leader_store_id
    steps: list[Step] = []
    for to_store, from_store in zip(sorted(want - have), sorted(have - want), strict=True):
        pid = new_peer_id()
        if pid is None:
            return None
        new = Peer(pid, to_store)
        steps.append(AddLearnerStep(to_store, pid))
        others = sorted(voters - {from_store}, key=lambda sid: (sid not in want, sid))
        if leader == from_store and not others:
            # The only voter leads (one replica): promote the new peer, hand it the lead.
            steps += [PromoteLearnerStep(to_store, pid), TransferLeaderStep(from_store, to_store)]
            leader = to_store
        else:
            if leader == from_store:
                # Hand the leadership to a voter that stays, where there is one.
                steps.append(TransferLeaderStep(from_store, others[0]))
                leader = others[0]
            old = source.peer_on(from_store)
            assert old is not None
            if joint:
                steps += [JointEnterStep((new,), (old,)), JointLeaveStep((new,), (old,))]
            else:
                steps.append(PromoteLearnerStep(to_store, pid))
        steps.append(RemovePeerStep(from_store))
        voters = (voters - {from_store}) | {to_store}
    moves_s = sum(st.timeout(source.approximate_size) for st in steps)
    src = _op(
        "merge-region",
        source,
        kind,
        [*steps, MergeStep(source.id, target, False)],
        reason,
        Priority.MEDIUM,
    )
    dst_step = MergeStep(source.id, target, passive=True, wait_s=moves_s)
    dst = _op(
        "merge-region",
        target,
        kind,
        [dst_step],
        f"target of merging region {source.id}",
        Priority.MEDIUM,
    )
    return src, dst


def leave_joint_state(region: Region, reason: str) -> Operator:
    """Finish a joint change whose operator is gone (cancelled by a split, or PD
    restarted mid-change). A demoting leader hands leadership to a voter first."""
    promote = tuple(p for p in region.peers if p.role == PeerRole.INCOMING_VOTER)
    demote = tuple(p for p in region.peers if p.role == PeerRole.DEMOTING_VOTER)
    steps: list[Step] = []
    if region.leader is not None and region.leader.role == PeerRole.DEMOTING_VOTER:
        targets = [p for p in region.peers if p.role == PeerRole.VOTER] or list(promote)
        if not targets:
            raise ValueError("no voter can take the leadership of a demoting leader")
        steps.append(TransferLeaderStep(region.leader_store_id, targets[0].store_id))
    steps.append(JointLeaveStep(promote, demote))
    return _op("leave-joint-state", region, OpKind.REPLICA, steps, reason, Priority.HIGH)


def promote_learner(region: Region, store: int, reason: str) -> Operator:
    peer = region.peer_on(store)
    assert peer is not None
    return _op(
        "promote-learner",
        region,
        OpKind.REPLICA,
        [PromoteLearnerStep(store, peer.id)],
        reason,
        Priority.HIGH,
    )


def _op(
    desc: str, region: Region, kind: OpKind, steps: list[Step], reason: str, priority: Priority
) -> Operator:
    return Operator(
        desc=desc,
        region_id=region.id,
        epoch=region.epoch,
        kind=kind,
        steps=steps,
        reason=reason,
        priority=priority,
        region_size=region.approximate_size,
        influence=compute_influence(region, steps),
    )
