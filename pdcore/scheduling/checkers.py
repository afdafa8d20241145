"""Checkers run on every region during patrol and repair what the rules demand: replace
down and offline peers, add missing replicas (isolated by location labels), remove
extra ones, promote learners, improve isolation, and merge small neighbours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pdcore.domain.config import ClusterConfig
from pdcore.domain.region import Peer, Region
from pdcore.domain.store import Store
from pdcore.scheduling import filters
from pdcore.scheduling.cluster import ClusterView
from pdcore.scheduling.operator import (
    Operator,
    OpKind,
    Priority,
    add_peer,
    leave_joint_state,
    merge_region,
    move_peer,
    promote_learner,
    remove_peer,
    replace_with_learner,
)
from pdcore.scheduling.rules import RegionFit, Rule, fit, rules_for
from pdcore.scheduling.scores import distinct_score, region_score

IdSource = Callable[[], int | None]


@dataclass
class CheckContext:
    view: ClusterView
    rules: list[Rule]
    now: float
    new_id: IdSource
    influence_size: dict[int, float] = field(default_factory=dict)


def _stores(view: ClusterView) -> dict[int, Store]:
    return {s.id: s for s in view.stores()}


def _peer_bad(ctx: CheckContext, region: Region, peer: Peer, store: Store | None) -> str:
    cfg = ctx.view.config.schedule
    if store is None or store.is_tombstone:
        return "its store is gone"
    if store.last_heartbeat_ns and store.is_down(ctx.now, cfg.max_store_down_time_s):
        return "its store is down"
    for d in region.down_peers:
        if d.peer.id == peer.id and d.down_seconds > cfg.max_store_down_time_s:
            return "the peer is down"
    if store.is_offline:
        return "its store is offline"
    return ""


def best_target(
    ctx: CheckContext, region: Region, rule: Rule, keep: list[Store], exclude: set[int]
) -> Store | None:
    """The store a new replica under `rule` should go to: allowed by filters and the
    rule, isolated from `keep` as well as possible, then the lowest region score."""
    cfg = ctx.view.config
    n = len(ctx.view.tree)
    best: tuple[float, float, int] | None = None
    chosen: Store | None = None
    for s in ctx.view.stores():
        if s.id in exclude or region.peer_on(s.id) is not None or not rule.store_ok(s):
            continue
        pending = ctx.view.tree.store_stats(s.id).pending_peer_count
        if filters.region_target(s, ctx.now, cfg.schedule, n, pending):
            continue
        if rule.isolation_level and any(
            s.label(rule.isolation_level)
            and s.label(rule.isolation_level) == k.label(rule.isolation_level)
            for k in keep
        ):
            continue
        dscore = distinct_score(rule.location_labels, s, keep)
        rscore = region_score(ctx.view.tree, s, cfg.schedule, ctx.influence_size.get(s.id, 0.0))
        key = (-dscore, rscore, s.id)
        if best is None or key < best:
            best, chosen = key, s
    return chosen


def _usable_orphan(
    ctx: CheckContext, region: Region, rf: RegionFit, stores: dict[int, Store], rule: Rule
) -> Peer | None:
    """A healthy, caught-up learner that matches no rule, on a store the rule accepts."""
    pending = {p.id for p in region.pending_peers}
    for p in sorted(rf.orphans, key=lambda p: p.store_id):
        s = stores.get(p.store_id)
        if (
            p.is_learner
            and p.id not in pending
            and s is not None
            and rule.store_ok(s)
            and not _peer_bad(ctx, region, p, s)
        ):
            return p
    return None


class JointStateChecker:
    """A region left in a joint state (its operator was cancelled by a split, or PD
    restarted mid-change) cannot be changed again until it leaves it."""

    name = "joint-state-checker"

    def check(self, region: Region) -> tuple[Operator | None, str]:
        if not region.in_joint_state:
            return None, ""
        if region.leader is None:
            return None, "region in a joint state has no leader"
        try:
            return leave_joint_state(region, "the region is in a joint state"), ""
        except ValueError as e:
            return None, str(e)


class RuleChecker:
    name = "rule-checker"

    def check(self, ctx: CheckContext, region: Region) -> tuple[Operator | None, str]:
        """One repair for `region`, or None with the reason nothing is needed/possible."""
        if region.leader is None:
            return None, "region has no leader"
        if region.in_joint_state:
            return None, "region is in a joint state"
        stores = _stores(ctx.view)
        cfg = ctx.view.config.schedule
        rules = rules_for(region, ctx.rules)
        rf: RegionFit = fit(region, rules, stores)
        for f in rf.fits:
            keep = [stores[p.store_id] for p in region.peers if p.store_id in stores]
            # Replace down / offline peers.
            for p in f.peers:
                bad = _peer_bad(ctx, region, p, stores.get(p.store_id))
                if not bad:
                    continue
                if "offline" in bad and not cfg.enable_replace_offline_replica:
                    continue
                if "down" in bad and not cfg.enable_remove_down_replica:
                    continue
                others = [s for s in keep if s.id != p.store_id]
                target = best_target(ctx, region, f.rule, others, {p.store_id})
                if target is None:
                    # The store that could take it may already hold a learner of this
                    # region that matches no rule (left by an operator that did not
                    # finish): PD promotes that orphan in the bad peer's place (an
                    # offline leader hands its leadership to another voter first).
                    orphan = _usable_orphan(ctx, region, rf, stores, f.rule)
                    if orphan is not None:
                        return replace_with_learner(
                            region,
                            p.store_id,
                            orphan,
                            f"replace peer on store {p.store_id} ({bad}) with the orphan "
                            f"learner on store {orphan.store_id}",
                            joint=cfg.enable_joint_consensus and not f.rule.wants_learner,
                        ), ""
                if target is None:
                    return None, f"no store can take the replica on store {p.store_id} ({bad})"
                if p.id == region.leader.id:
                    continue  # a leader reports, so it is not down; offline leaders move below
                pid = ctx.new_id()
                if pid is None:
                    return None, "no peer id available yet"
                op = move_peer(
                    region,
                    p.store_id,
                    target.id,
                    pid,
                    f"replace peer on store {p.store_id}: {bad}",
                    kind=OpKind.REPLICA,
                    priority=Priority.HIGH,
                    joint=cfg.enable_joint_consensus and not f.rule.wants_learner,
                )
                op.desc = "replace-rule-down-peer" if "down" in bad else "replace-rule-offline-peer"
                return op, ""
            if f.missing and cfg.enable_make_up_replica:
                target = best_target(ctx, region, f.rule, keep, set())
                if target is None:
                    return (
                        None,
                        f"rule {f.rule.id} wants {f.missing} more replicas but no store fits",
                    )
                pid = ctx.new_id()
                if pid is None:
                    return None, "no peer id available yet"
                return add_peer(
                    region,
                    target.id,
                    pid,
                    f"rule {f.rule.group_id}/{f.rule.id} is missing {f.missing} replicas",
                    learner=f.rule.wants_learner,
                ), ""
            for p in f.peers:
                if p.is_learner and not f.rule.wants_learner:
                    return promote_learner(
                        region, p.store_id, f"learner on store {p.store_id} should be a voter"
                    ), ""
        # Offline leader: move it (the move transfers leadership first).
        for f in rf.fits:
            for p in f.peers:
                s = stores.get(p.store_id)
                if p.id == region.leader.id and s is not None and s.is_offline:
                    others = [
                        x
                        for x in (stores.get(q.store_id) for q in region.peers)
                        if x and x.id != s.id
                    ]
                    target = best_target(ctx, region, f.rule, others, {s.id})
                    pid = ctx.new_id() if target else None
                    if target is None or pid is None:
                        return None, "offline leader cannot move yet"
                    op = move_peer(
                        region,
                        s.id,
                        target.id,
                        pid,
                        f"store {s.id} is offline",
                        kind=OpKind.REPLICA,
                        priority=Priority.HIGH,
                        joint=cfg.enable_joint_consensus,
                    )
                    op.desc = "replace-rule-offline-peer"
                    return op, ""
        if rf.orphans and cfg.enable_remove_extra_replica:
            victim = max(
                rf.orphans,
                key=lambda p: (
                    bool(_peer_bad(ctx, region, p, stores.get(p.store_id))),
                    p.is_learner,
                    p.store_id,
                ),
            )
            if len(region.voters) <= 1 and victim.is_voter:
                return None, "will not remove the last voter"
            try:
                return remove_peer(
                    region, victim.store_id, f"peer on store {victim.store_id} matches no rule"
                ), ""
            except ValueError as e:
                return None, str(e)
        if cfg.enable_location_replacement:
            better = self._better_location(ctx, region, rf, stores)
            if better is not None:
                return better, ""
        return None, "region fits its rules"

    def _better_location(
        self, ctx: CheckContext, region: Region, rf: RegionFit, stores: dict[int, Store]
    ) -> Operator | None:
        for f in rf.fits:
            labels = f.rule.location_labels
            if not labels or len(f.peers) < 2:
                continue
            peer_stores = [stores[p.store_id] for p in f.peers if p.store_id in stores]
            worst = min(peer_stores, key=lambda s: (distinct_score(labels, s, peer_stores), -s.id))
            others = [s for s in peer_stores if s.id != worst.id]
            current = distinct_score(labels, worst, others)
            target = best_target(ctx, region, f.rule, others, {worst.id})
            if target is None or distinct_score(labels, target, others) <= current:
                continue
            pid = ctx.new_id()
            if pid is None:
                return None
            op = move_peer(
                region,
                worst.id,
                target.id,
                pid,
                f"store {target.id} isolates the replica better than store {worst.id}",
                kind=OpKind.REPLICA,
                priority=Priority.MEDIUM,
                joint=ctx.view.config.schedule.enable_joint_consensus,
            )
            op.desc = "move-to-better-location"
            return op
        return None


@dataclass
class MergeChecker:
    """Merge a small region into a small neighbour with the same stores."""

    started_at: float
    split_at: dict[int, float] = field(default_factory=dict)
    name: str = "merge-checker"

    def check(self, ctx: CheckContext, region: Region) -> tuple[list[Operator], str]:
        cfg: ClusterConfig = ctx.view.config
        sc = cfg.schedule
        interval = sc.split_merge_interval_s
        if ctx.now - self.started_at < interval:
            return [], "merge waits split-merge-interval after start"
        if ctx.now - self.split_at.get(region.id, -1e18) < interval:
            return [], "region split recently"
        if not region.is_healthy or region.leader is None:
            return [], "region is not healthy"
        if (
            region.approximate_size > sc.max_merge_region_size
            or region.approximate_keys > sc.max_merge_region_keys
        ):
            return [], "region is not small"
        tree = ctx.view.tree
        cands = [tree.next(region)]
        if not sc.enable_one_way_merge:
            cands.append(tree.find_ending_at(region.start_key) if region.start_key else None)
        rules = [(r.group_id, r.id) for r in rules_for(region, ctx.rules)]
        options: list[tuple[bool, int, Region]] = []
        for t in cands:
            if t is None or not t.is_healthy or t.leader is None:
                continue
            if ctx.now - self.split_at.get(t.id, -1e18) < interval:
                continue
            if t.approximate_size + region.approximate_size > max(
                sc.max_merge_region_size * 4, 256
            ):
                continue
            if [(r.group_id, r.id) for r in rules_for(t, ctx.rules)] != rules:
                continue  # other placement rules: the merged region could fit neither
            # Same stores first (no peer moves), then the smaller neighbour.
            options.append((t.store_ids != region.store_ids, t.approximate_size, t))
        for _, _, best in sorted(options, key=lambda o: (o[0], o[1], o[2].id)):
            ops = merge_region(
                region,
                best,
                ctx.new_id,
                f"region {region.id} ({region.approximate_size} MiB) is small",
                joint=sc.enable_joint_consensus,
            )
            if ops is not None:
                return list(ops), ""
        return [], "no adjacent region to merge with"
