"""The region scatterer behind ScatterRegion: spread a group's peers and leaders so each
store holds about the same number of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.scheduling.operator import (
    Operator,
    OpKind,
    Priority,
    compute_influence,
)
from pdcore.scheduling.steps import (
    AddLearnerStep,
    PromoteLearnerStep,
    RemovePeerStep,
    Step,
    TransferLeaderStep,
)


@dataclass
class GroupCounts:
    peers: dict[int, int] = field(default_factory=dict)
    leaders: dict[int, int] = field(default_factory=dict)


class Scatterer:
    def __init__(self) -> None:
        self.groups: dict[str, GroupCounts] = {}

    def scatter(
        self, region: Region, group: str, stores: list[Store], new_id: Callable[[], int | None]
    ) -> Operator | None:
        counts = self.groups.setdefault(group, GroupCounts())
        up = [s for s in stores if s.is_up]
        n = len(region.peers)
        if len(up) < n or region.leader is None:
            return None
        chosen = sorted(up, key=lambda s: (counts.peers.get(s.id, 0), s.id))[:n]
        chosen_ids = {s.id for s in chosen}
        current = region.store_ids
        adds = [s.id for s in chosen if s.id not in current]
        removes = [sid for sid in sorted(current) if sid not in chosen_ids]
        steps: list[Step] = []
        leader_store = region.leader_store_id
        for to_store, from_store in zip(adds, removes, strict=True):
            pid = new_id()
            if pid is None:
                return None
            steps += [AddLearnerStep(to_store, pid), PromoteLearnerStep(to_store, pid)]
            if from_store == leader_store:
                steps.append(TransferLeaderStep(from_store, to_store))
                leader_store = to_store
            steps.append(RemovePeerStep(from_store))
        target_leader = min(chosen_ids, key=lambda sid: (counts.leaders.get(sid, 0), sid))
        if target_leader != leader_store:
            steps.append(TransferLeaderStep(leader_store, target_leader))
        for sid in chosen_ids:
            counts.peers[sid] = counts.peers.get(sid, 0) + 1
        counts.leaders[target_leader] = counts.leaders.get(target_leader, 0) + 1
        if not steps:
            return None
        return Operator(
            desc="scatter-region",
            region_id=region.id,
            epoch=region.epoch,
            kind=OpKind.ADMIN,
            steps=steps,
            priority=Priority.HIGH,
            reason=f"scatter group {group or '(default)'}",
            region_size=region.approximate_size,
            influence=compute_influence(region, steps),
        )
