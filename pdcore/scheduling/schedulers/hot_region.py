"""balance-hot-region: move hot read/write leaders and peers off overloaded stores
(§2.6, simplified: one configurable dimension per type — bytes, keys or queries per
second, bytes by default — with PD's 1.05 tolerances)."""

from __future__ import annotations

from typing import Any

from pdcore.domain.region import Region
from pdcore.scheduling import filters
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import Operator, OpKind, Priority, move_peer, transfer_leader
from pdcore.scheduling.schedulers.base import SchedContext
from pdcore.scheduling.steps import AddLearnerStep, RemovePeerStep, TransferLeaderStep

# Minimum rates before a region counts as hot, per dimension (PD's minimum thresholds).
MIN_HOT = {
    ("write", "byte"): 1024.0,
    ("read", "byte"): 8 * 1024.0,
    ("write", "key"): 32.0,
    ("read", "key"): 128.0,
    ("write", "query"): 32.0,
    ("read", "query"): 128.0,
}
DIMENSIONS = ("byte", "key", "query")


class HotRegion:
    kind = OpKind.HOT_REGION

    def __init__(self, name: str = "balance-hot-region-scheduler") -> None:
        self.name = name
        self.read_priority = "byte"
        self.write_priority = "byte"
        self.src_tolerance = 1.05
        self.dst_tolerance = 1.05

    def config(self) -> dict[str, Any]:
        return {
            "read-priorities": [self.read_priority],
            "write-priorities": [self.write_priority],
            "src-tolerance-ratio": self.src_tolerance,
            "dst-tolerance-ratio": self.dst_tolerance,
            "min-hot-rates": {f"{k}-{d}": v for (k, d), v in MIN_HOT.items()},
        }

    def update_config(self, changes: dict[str, Any]) -> None:
        new = dict(changes)
        for key, attr in (
            ("read-priorities", "read_priority"),
            ("write-priorities", "write_priority"),
        ):
            if key in new:
                value = new.pop(key)
                if not isinstance(value, list) or not value or value[0] not in DIMENSIONS:
                    raise ValueError(f"{key} must be a list starting with one of {DIMENSIONS}")
                setattr(self, attr, value[0])
        for key, attr in (
            ("src-tolerance-ratio", "src_tolerance"),
            ("dst-tolerance-ratio", "dst_tolerance"),
        ):
            if key in new:
                value = new.pop(key)
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not 1.0 <= value <= 10.0
                ):
                    raise ValueError(f"{key} must be a number between 1 and 10")
                setattr(self, attr, float(value))
        if new:
            raise ValueError(f"unknown hot-region config {sorted(new)}")

    def hot_regions(self, ctx: SchedContext, kind: str) -> dict[int, float]:
        """Regions hot on the configured dimension (bytes, keys or queries per second)."""
        dim = self.read_priority if kind == "read" else self.write_priority
        floor = MIN_HOT[(kind, dim)]
        out = {}
        for rid, st in ctx.hot.items():
            rate = st.rate(kind, dim)
            if rate >= floor and ctx.view.tree.get(rid) is not None:
                out[rid] = rate
        return out

    def loads(self, ctx: SchedContext, hot: dict[int, float], peers: bool) -> dict[int, float]:
        """Hot load per up store, counting each region where its running operator will
        leave it: without this pending influence, one stale snapshot sends every hot
        leader of a store away at once and the next pass sends them back."""
        loads = {s.id: 0.0 for s in ctx.stores() if s.is_up}
        for rid, rate in hot.items():
            r = ctx.view.tree.get(rid)
            if r is None:
                continue
            for sid in _holders_after(r, ctx.controller.running.get(rid), peers):
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
            if loads[src] <= mean * self.src_tolerance:
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
                    if loads.get(dst, 0.0) >= mean / self.dst_tolerance:
                        continue
                    # Only move if the pair ends up closer than it started.
                    if max(loads[src] - rate, loads[dst] + rate) >= loads[src]:
                        continue
                    reason = (
                        f"store {src} {kind} load {loads[src]:.0f}/s is above the mean {mean:.0f}/s"
                    )
                    if peers:
                        if not ctx.keeps_rules(region, src, dst):
                            continue
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


def _holders_after(region: Region, op: Operator | None, peers: bool) -> set[int]:
    """The stores holding the region's leader (or its peers) once `op` has run."""
    leader = region.leader_store_id
    stores = {p.store_id for p in region.peers}
    for step in op.steps[op.step_index :] if op is not None else ():
        if isinstance(step, TransferLeaderStep):
            leader = step.to_store
        elif isinstance(step, AddLearnerStep):
            stores.add(step.to_store)
        elif isinstance(step, RemovePeerStep):
            stores.discard(step.from_store)
    return stores if peers else {leader}
