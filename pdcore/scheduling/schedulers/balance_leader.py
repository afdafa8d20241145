"""balance-leader: even out leader counts (or sizes) across stores (§2.4)."""

from __future__ import annotations

from typing import Any

from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.scheduling import filters
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import Operator, OpKind, transfer_leader
from pdcore.scheduling.schedulers.base import SchedContext
from pdcore.scheduling.scores import leader_score, tolerant_resource


class BalanceLeader:
    kind = OpKind.LEADER

    def __init__(self, batch: int = 4, name: str = "balance-leader-scheduler") -> None:
        if not 1 <= batch <= 100:
            raise ValueError("batch must be between 1 and 100")
        self.batch = batch
        self.name = name

    def config(self) -> dict[str, Any]:
        return {"batch": self.batch}

    def update_config(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - {"batch"}
        if unknown:
            raise ValueError(f"unknown balance-leader config {sorted(unknown)}")
        batch = changes.get("batch", self.batch)
        if not isinstance(batch, int) or not 1 <= batch <= 100:
            raise ValueError("batch must be an integer between 1 and 100")
        self.batch = batch

    def schedule(self, ctx: SchedContext, diag: Diagnosis) -> list[Operator]:
        cfg = ctx.view.config.schedule
        if not ctx.controller.allowed(OpKind.LEADER):
            diag.note(
                "limit",
                "leader-schedule-limit",
                f"{cfg.leader_schedule_limit} leader operators already running",
            )
            return []
        tree = ctx.view.tree
        stores = ctx.stores()
        inf = ctx.influence()
        delta: dict[int, float] = {
            s.id: float(inf[s.id].leader_count if s.id in inf else 0) for s in stores
        }

        def score(s: Store) -> float:
            return leader_score(tree, s.id, cfg, delta[s.id])

        sources, targets = [], []
        for s in stores:
            if r := filters.leader_source(s, ctx.now, cfg):
                diag.note("source", f"store {s.id}", r)
            else:
                sources.append(s)
            if r := filters.leader_target(s, ctx.now, cfg, ctx.evicted):
                diag.note("target", f"store {s.id}", r)
            else:
                targets.append(s)
        tol = tolerant_resource(tree, stores, cfg, leader=True)
        ops: list[Operator] = []
        used: set[int] = set()
        target_ids = {s.id for s in targets}
        for _ in range(self.batch):
            if len(ops) + ctx.controller.count(OpKind.LEADER) >= cfg.leader_schedule_limit:
                break
            sources.sort(key=score, reverse=True)
            targets.sort(key=score)
            op = None
            if sources:
                op = self._out_of(ctx, diag, sources[0], target_ids, score, tol, used)
            if op is None and targets:
                op = self._into(ctx, diag, targets[0], {s.id for s in sources}, score, tol, used)
            if op is None:
                break
            ops.append(op)
            used.add(op.region_id)
            step = op.steps[0]
            delta[step.from_store] -= 1  # type: ignore[union-attr]
            delta[step.to_store] += 1  # type: ignore[union-attr]
        if not ops and not diag.summary:
            diag.summary = (
                "leaders are balanced within tolerance"
                if sources and targets
                else "no usable stores"
            )
        return ops

    def _balanced(self, src: float, dst: float, tol: float) -> bool:
        return not (src - 1 - tol > dst + 1 + tol)

    def _out_of(
        self,
        ctx: SchedContext,
        diag: Diagnosis,
        source: Store,
        target_ids: set[int],
        score: Any,
        tol: float,
        used: set[int],
    ) -> Operator | None:
        stores = {s.id: s for s in ctx.stores()}
        if ctx.view.tree.store_stats(source.id).leader_count == 0:
            diag.note("region", f"store {source.id}", "no leader on the store")
            return None
        regions = ctx.sample_regions(
            lambda r: (
                r.leader_store_id == source.id and r.is_healthy and ctx.free(r) and r.id not in used
            ),
            4,
        )
        if not regions:
            diag.note(
                "region", f"store {source.id}", "no healthy leader region without an operator"
            )
        for region in regions:
            cands = sorted(
                (
                    stores[p.store_id]
                    for p in region.followers
                    if p.store_id in target_ids and p.store_id in stores
                ),
                key=score,
            )
            if not cands:
                diag.note("target", f"region {region.id}", "no follower store can take the leader")
            for t in cands:
                if self._balanced(score(source), score(t), tol):
                    diag.note(
                        "target",
                        f"store {t.id}",
                        f"store {source.id} is not above it by more than the tolerance {tol:g}",
                    )
                    break
                return transfer_leader(
                    region, t.id, f"store {source.id} has more leaders than store {t.id}"
                )
        return None

    def _into(
        self,
        ctx: SchedContext,
        diag: Diagnosis,
        target: Store,
        source_ids: set[int],
        score: Any,
        tol: float,
        used: set[int],
    ) -> Operator | None:
        stores = {s.id: s for s in ctx.stores()}
        st = ctx.view.tree.store_stats(target.id)
        if st.region_count - st.leader_count == 0:  # nothing to sample for: skip the tries
            diag.note("region", f"store {target.id}", "no follower on the store")
            return None

        def pred(r: Region) -> bool:
            return (
                any(p.store_id == target.id for p in r.followers)
                and r.is_healthy
                and ctx.free(r)
                and r.id not in used
                and r.leader_store_id in source_ids
            )

        for region in ctx.sample_regions(pred, 4):
            src = stores.get(region.leader_store_id)
            if src is None or self._balanced(score(src), score(target), tol):
                continue
            return transfer_leader(
                region, target.id, f"store {target.id} has fewer leaders than store {src.id}"
            )
        return None
