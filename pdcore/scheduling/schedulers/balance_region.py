"""balance-region: even out region size across stores by region score (§2.5)."""

from __future__ import annotations

from typing import Any

from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.scheduling import filters
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import Operator, OpKind, move_peer
from pdcore.scheduling.schedulers.base import SchedContext
from pdcore.scheduling.scores import distinct_score, region_score, tolerant_resource


class BalanceRegion:
    kind = OpKind.REGION

    def __init__(self, name: str = "balance-region-scheduler") -> None:
        self.name = name

    def config(self) -> dict[str, Any]:
        return {}

    def update_config(self, changes: dict[str, Any]) -> None:
        if changes:
            raise ValueError(f"balance-region has no config {sorted(changes)}")

    def schedule(self, ctx: SchedContext, diag: Diagnosis) -> list[Operator]:
        cfg = ctx.view.config
        sc = cfg.schedule
        if not ctx.controller.allowed(OpKind.REGION):
            diag.note("limit", "region-schedule-limit", "region operators at the limit")
            return []
        tree = ctx.view.tree
        stores = ctx.stores()
        inf = ctx.influence()
        n_regions = len(tree)

        def score(s: Store, extra: float = 0.0) -> float:
            d = float(inf[s.id].region_size) if s.id in inf else 0.0
            return region_score(tree, s, sc, d + extra)

        sources = []
        targets = []
        for s in stores:
            if r := filters.region_source(s, ctx.now, sc):
                diag.note("source", f"store {s.id}", r)
            else:
                sources.append(s)
            pending = tree.store_stats(s.id).pending_peer_count
            if r := filters.region_target(s, ctx.now, sc, n_regions, pending):
                diag.note("target", f"store {s.id}", r)
            else:
                targets.append(s)
        if not targets:
            diag.summary = "no store can receive a region"
            return []
        tol = tolerant_resource(tree, stores, sc, leader=False)
        sources.sort(key=score, reverse=True)
        targets.sort(key=score)
        labels = cfg.replication.location_labels
        by_id = {s.id: s for s in stores}
        for source in sources:
            if source.id == targets[0].id and len(targets) == 1:
                continue

            def pred(r: Region, sid: int = source.id) -> bool:
                p = r.peer_on(sid)
                return (
                    p is not None
                    and r.is_healthy
                    and ctx.free(r)
                    and len(r.voters) == cfg.replication.max_replicas
                    and (r.approximate_size > 1 or n_regions < 100)
                )

            regions = ctx.sample_regions(pred, 3)
            if not regions:
                diag.note(
                    "region", f"store {source.id}", "no healthy, fully replicated region to move"
                )
            for region in regions:
                others = [
                    by_id[p.store_id]
                    for p in region.peers
                    if p.store_id in by_id and p.store_id != source.id
                ]
                before = distinct_score(labels, source, others)
                size = float(region.approximate_size)
                for t in targets:
                    if region.peer_on(t.id) is not None:
                        continue
                    if labels and distinct_score(labels, t, others) < before:
                        diag.note(
                            "target",
                            f"store {t.id}",
                            f"moving region {region.id} there would weaken isolation",
                        )
                        continue
                    if not ctx.keeps_rules(region, source.id, t.id):
                        diag.note(
                            "target",
                            f"store {t.id}",
                            f"moving region {region.id} there would break its placement rules",
                        )
                        continue
                    if not score(source, -(size + tol)) > score(t, size + tol):
                        diag.note(
                            "target",
                            f"store {t.id}",
                            f"store {source.id} is not above it by more than the tolerance",
                        )
                        break
                    pid = ctx.new_id()
                    if pid is None:
                        diag.summary = "waiting for peer ids"
                        return []
                    return [
                        move_peer(
                            region,
                            source.id,
                            t.id,
                            pid,
                            f"store {source.id} region score above store {t.id}",
                            joint=sc.enable_joint_consensus,
                        )
                    ]
        diag.summary = diag.summary or "regions are balanced within tolerance"
        return []
