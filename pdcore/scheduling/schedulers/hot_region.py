"""balance-hot-region: move hot read/write leaders and peers off overloaded stores
(§2.6, simplified: one dimension per type — bytes/s — with PD's 1.05 tolerances)."""

from __future__ import annotations

from typing import Any

from pdcore.scheduling import filters
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import Operator, OpKind, Priority, move_peer, transfer_leader
from pdcore.scheduling.schedulers.base import SchedContext

MIN_HOT_WRITE = 1024.0  # bytes/s
MIN_HOT_READ = 8 * 1024.0
SRC_TOLERANCE = 1.05
DST_TOLERANCE = 1.05


class HotRegion:
    kind = OpKind.HOT_REGION

    def __init__(self, name: str = "balance-hot-region-scheduler") -> None:
        self.name = name

    def config(self) -> dict[str, Any]:
        return {
            "src-tolerance-ratio": SRC_TOLERANCE,
            "dst-tolerance-ratio": DST_TOLERANCE,
            "min-hot-write-byte-rate": MIN_HOT_WRITE,
            "min-hot-read-byte-rate": MIN_HOT_READ,
        }

    def hot_regions(self, ctx: SchedContext, kind: str) -> dict[int, float]:
        floor = MIN_HOT_WRITE if kind == "write" else MIN_HOT_READ
        out = {}
        for rid, st in ctx.hot.items():
            rate = st.write_bytes if kind == "write" else st.read_bytes
            if rate >= floor and ctx.view.tree.get(rid) is not None:
                out[rid] = rate
        return out

    def loads(self, ctx: SchedContext, hot: dict[int, float], peers: bool) -> dict[int, float]:
        loads = {s.id: 0.0 for s in ctx.stores() if s.is_up}
        for rid, rate in hot.items():
            r = ctx.view.tree.get(rid)
            if r is None:
                continue
            holders = [p.store_id for p in r.peers] if peers else [r.leader_store_id]
            for sid in holders:
                if sid in loads:
                    loads[sid] += rate
        return loads

    def schedule(self, ctx: SchedContext, diag: Diagnosis) -> list[Operator]:
        if not ctx.controller.allowed(OpKind.HOT_REGION):
            diag.note("limit", "hot-region-schedule-limit", "hot-region operators at the limit")
            return []
        for kind in ("write", "read"):
            op = self._balance(ctx, diag, kind, peers=False)
            if op is None and kind == "write":
                op = self._balance(ctx, diag, kind, peers=True)
            if op is not None:
                return [op]
        diag.summary = diag.summary or "no store is hot beyond tolerance"
        return []

    def _balance(
        self, ctx: SchedContext, diag: Diagnosis, kind: str, peers: bool
    ) -> Operator | None:
        hot = self.hot_regions(ctx, kind)
        if not hot:
            diag.note(kind, "cluster", "no hot regions")
            return None
        loads = self.loads(ctx, hot, peers)
        if len(loads) < 2:
            return None
        mean = sum(loads.values()) / len(loads)
        cfg = ctx.view.config.schedule
        stores = {s.id: s for s in ctx.stores()}
        n = len(ctx.view.tree)
        for src in sorted(loads, key=loads.__getitem__, reverse=True):
            if loads[src] <= mean * SRC_TOLERANCE:
                break
            cands = sorted(
                (ctx.view.tree.get(rid) for rid in hot),
                key=lambda r: -hot[r.id] if r else 0,
            )
            for region in cands:
                if region is None or not ctx.free(region) or not region.is_healthy:
                    continue
                rate = hot[region.id]
                if peers:
                    if region.peer_on(src) is None:
                        continue
                    dsts = [
                        sid
                        for sid in sorted(loads, key=loads.__getitem__)
                        if region.peer_on(sid) is None
                        and sid in stores
                        and not filters.region_target(stores[sid], ctx.now, cfg, n, 0)
                    ]
                else:
                    if region.leader_store_id != src:
                        continue
                    dsts = [
                        p.store_id
                        for p in sorted(region.followers, key=lambda p: loads.get(p.store_id, 0.0))
                        if p.store_id in stores
                        and not filters.leader_target(stores[p.store_id], ctx.now, cfg, ctx.evicted)
                    ]
                for dst in dsts:
                    if loads.get(dst, 0.0) >= mean / DST_TOLERANCE:
                        continue
                    # Only move if the pair ends up closer than it started.
                    if max(loads[src] - rate, loads[dst] + rate) >= loads[src]:
                        continue
                    reason = (
                        f"store {src} {kind} load {loads[src]:.0f} B/s is above "
                        f"the mean {mean:.0f} B/s"
                    )
                    if peers:
                        pid = ctx.new_id()
                        if pid is None:
                            return None
                        op = move_peer(
                            region,
                            src,
                            dst,
                            pid,
                            reason,
                            kind=OpKind.HOT_REGION,
                            joint=cfg.enable_joint_consensus,
                        )
                    else:
                        op = transfer_leader(region, dst, reason, kind=OpKind.HOT_REGION)
                    op.desc = f"move-hot-{kind}-peer" if peers else f"transfer-hot-{kind}-leader"
                    op.priority = Priority.MEDIUM
                    return op
            diag.note(kind, f"store {src}", "no hot region on it can move to a cooler store")
        return None
