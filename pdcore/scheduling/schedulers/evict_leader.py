"""evict-leader: move every leader off the given stores (rolling restarts, slow stores)."""

from __future__ import annotations

from typing import Any

from pdcore.scheduling import filters
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import Operator, OpKind, Priority, transfer_leader
from pdcore.scheduling.schedulers.base import SchedContext
from pdcore.scheduling.scores import leader_score


class EvictLeader:
    kind = OpKind.LEADER

    def __init__(
        self, store_ids: list[int], batch: int = 3, name: str = "evict-leader-scheduler"
    ) -> None:
        if not store_ids:
            raise ValueError("evict-leader-scheduler needs at least one store id")
        self.store_ids = sorted(set(store_ids))
        self.batch = batch
        self.name = name

    def config(self) -> dict[str, Any]:
        return {"store-id-ranges": {str(s): [] for s in self.store_ids}, "batch": self.batch}

    def update_config(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - {"store_id", "batch"}
        if unknown:
            raise ValueError(f"unknown evict-leader config {sorted(unknown)}")
        store = changes.get("store_id")
        if store is not None:
            if not isinstance(store, int) or store <= 0:
                raise ValueError("store_id must be a positive integer")
            self.store_ids = sorted({*self.store_ids, store})
        batch = changes.get("batch", self.batch)
        if not isinstance(batch, int) or not 1 <= batch <= 100:
            raise ValueError("batch must be an integer between 1 and 100")
        self.batch = batch

    def schedule(self, ctx: SchedContext, diag: Diagnosis) -> list[Operator]:
        cfg = ctx.view.config.schedule
        stores = {s.id: s for s in ctx.stores()}
        evicted = set(self.store_ids)
        ops: list[Operator] = []
        for region in ctx.view.tree:
            if len(ops) >= self.batch:
                break
            if region.leader_store_id not in evicted or not ctx.free(region):
                continue
            cands = [
                p.store_id
                for p in region.followers
                if p.store_id in stores
                and not filters.leader_target(
                    stores[p.store_id], ctx.now, cfg, evicted | ctx.evicted
                )
            ]
            if not cands:
                diag.note("target", f"region {region.id}", "no follower can take the leader")
                continue
            to = min(cands, key=lambda sid: leader_score(ctx.view.tree, sid, cfg))
            op = transfer_leader(
                region,
                to,
                f"evicting leaders from store {region.leader_store_id}",
                priority=Priority.HIGH,
            )
            op.desc = "evict-leader"
            ops.append(op)
        if not ops:
            diag.summary = "no leaders left on the evicted stores"
        return ops
