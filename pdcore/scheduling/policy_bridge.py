"""Between the scheduling core and Wasm policies: the snapshot a policy sees (built from
the cluster view), and host-side validation that turns a proposal into an operator
only if a built-in scheduler could have made it — region known at that epoch, stores
usable, limits respected, placement rules kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import compress, repeat

from pdcore.domain.region import Peer, Region
from pdcore.domain.store import Store
from pdcore.policy.abi import (
    NO_LABEL,
    PeerView,
    PolicyInput,
    Proposal,
    ProposalKind,
    RegionFlag,
    RegionView,
    StoreFlag,
    StoreView,
    assemble_snapshot,
    peer_records,
    region_record,
)
from pdcore.scheduling import filters
from pdcore.scheduling.cluster import ClusterView
from pdcore.scheduling.controller import OperatorController
from pdcore.scheduling.operator import Operator, OpKind, move_peer, remove_peer, transfer_leader
from pdcore.scheduling.rules import Rule, default_rules, fit, rules_for

SLOW_SCORE = 80


def label_values(view: ClusterView, key: str) -> dict[str, int]:
    values = sorted({s.label(key) for s in view.stores() if s.label(key)})
    return {v: i for i, v in enumerate(values)}


def store_views(
    view: ClusterView, now: float, labels: dict[str, int], label_key: str = "zone"
) -> list[StoreView]:
    """Every store but tombstones, as a policy sees it."""
    cfg = view.config.schedule
    n = len(view.tree)
    evicted: set[int] = set()
    stores = []
    for s in view.stores():
        if s.is_tombstone:
            continue
        st = view.tree.store_stats(s.id)
        flags = 0
        if s.is_up:
            flags |= StoreFlag.UP
        if s.last_heartbeat_ns and (
            s.is_disconnected(now) or s.is_down(now, cfg.max_store_down_time_s)
        ):
            flags |= StoreFlag.DOWN
        if s.is_offline:
            flags |= StoreFlag.OFFLINE
        if s.stats.is_busy:
            flags |= StoreFlag.BUSY
        if not filters.leader_target(s, now, cfg, evicted):
            flags |= StoreFlag.LEADER_TARGET
        if not filters.region_target(s, now, cfg, n, st.pending_peer_count):
            flags |= StoreFlag.REGION_TARGET
        if s.stats.slow_score >= SLOW_SCORE:
            flags |= StoreFlag.SLOW
        stores.append(
            StoreView(
                s.id,
                st.leader_count,
                st.region_count,
                st.region_size,
                int(flags),
                s.stats.slow_score,
                labels.get(s.label(label_key), NO_LABEL),
            )
        )
    return stores


def build_input(
    view: ClusterView,
    controller: OperatorController,
    now: float,
    config: dict[str, object],
    max_proposals: int,
    label_key: str = "zone",
    store_ids: set[int] | None = None,
) -> PolicyInput:
    """The snapshot: every store; every region (or those led by `store_ids`)."""
    labels = label_values(view, label_key)
    stores = store_views(view, now, labels, label_key)
    regions = []
    running = controller.running
    for r in view.tree:
        if store_ids is not None and r.leader_store_id not in store_ids:
            continue
        flags = (RegionFlag.HEALTHY if r.is_healthy else 0) | (
            RegionFlag.HAS_OPERATOR if r.id in running else 0
        )
        regions.append(
            RegionView(
                r.id,
                r.epoch.conf_ver,
                r.epoch.version,
                r.leader_store_id,
                r.approximate_size,
                int(flags),
                tuple(PeerView(p.store_id, int(p.role)) for p in r.peers),
            )
        )
    return PolicyInput(stores, regions, config, labels, max_proposals)


# A region's cached encoding: (the region object it was made from, its REGION record
# without peer_off and HAS_OPERATOR, its PEER records).
_Entry = tuple[Region, bytes, bytes]


def _encode_region(r: Region) -> _Entry:
    return (
        r,
        region_record(
            r.id,
            r.epoch.conf_ver,
            r.epoch.version,
            r.leader_store_id,
            r.approximate_size,
            int(RegionFlag.HEALTHY) if r.is_healthy else 0,
            len(r.peers),
        ),
        peer_records([(p.store_id, int(p.role)) for p in r.peers]),
    )


# What the cache answers for a region it does not hold: its first item is no region.
_MISSING: _Entry = (None, b"", b"")  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One encoded snapshot and what the host needs of it after the run."""

    data: bytes
    _regions: dict[int, _Entry]

    @property
    def region_count(self) -> int:
        return len(self._regions)

    def leader_of(self, region_id: int) -> int:
        """The leader store of a region in the snapshot as the policy saw it (0: absent)."""
        e = self._regions.get(region_id)
        return e[0].leader_store_id if e is not None else 0


class SnapshotEncoder:
    """`encode_snapshot(build_input(...))`, byte for byte, but cheap when run again.

    Regions are immutable and replaced on change, so each region's encoding is cached
    with the object it came from and reused while the tree still holds that object; only
    new or replaced regions are encoded again. What varies per run without a new region
    (HAS_OPERATOR, peer_off) is applied when the snapshot is assembled. Not thread-safe:
    one caller at a time (the event loop)."""

    def __init__(self) -> None:
        self._cache: dict[int, _Entry] = {}
        self.encoded = 0  # regions encoded (cache misses) by the last run

    def encode(
        self,
        view: ClusterView,
        controller: OperatorController,
        now: float,
        config: dict[str, object],
        max_proposals: int,
        label_key: str = "zone",
        store_ids: set[int] | None = None,
    ) -> Snapshot:
        labels = label_values(view, label_key)
        stores = store_views(view, now, labels, label_key)
        if store_ids is None:
            regions = list(view.tree)
        else:
            regions = [r for r in view.tree if r.leader_store_id in store_ids]
        # Look every region up, then encode only those whose cached entry came from
        # another object (comprehensions and map(): this is the part run 100,000 times).
        ids = [r.id for r in regions]
        entries = list(map(self._cache.get, ids, repeat(_MISSING)))
        stale = [i for i, (r, e) in enumerate(zip(regions, entries, strict=True)) if e[0] is not r]
        for i in stale:
            entries[i] = _encode_region(regions[i])
        running = controller.running
        with_operator = list(compress(range(len(ids)), map(running.__contains__, ids)))
        fresh = dict(zip(ids, entries, strict=True))
        # Only what this run saw stays cached: removed regions are dropped.
        self._cache = fresh
        self.encoded = len(stale)
        data = assemble_snapshot(
            PolicyInput(stores, (), config, labels, max_proposals),
            b"".join([e[1] for e in entries]),
            b"".join([e[2] for e in entries]),
            with_operator,
        )
        return Snapshot(data, fresh)


@dataclass(frozen=True, slots=True)
class Verdict:
    operator: Operator | None
    reason: str  # why it was refused (empty when accepted)


def validate(
    view: ClusterView,
    controller: OperatorController,
    p: Proposal,
    now: float,
    new_id: Callable[[], int | None],
    policy: str,
    rules_in_force: list[Rule] | None = None,
) -> Verdict:
    cfg = view.config
    region = view.tree.get(p.region_id)
    if region is None:
        return Verdict(None, f"region {p.region_id} does not exist")
    if (region.epoch.conf_ver, region.epoch.version) != (p.conf_ver, p.version):
        return Verdict(None, f"region {p.region_id} epoch changed since the snapshot")
    if not region.is_healthy:
        return Verdict(None, f"region {p.region_id} has down or pending peers")
    stores: dict[int, Store] = {s.id: s for s in view.stores()}
    target = stores.get(p.target_store)
    reason = f"policy {policy}: {p.reason}"
    op: Operator
    if p.kind == ProposalKind.TRANSFER_LEADER:
        if target is None:
            return Verdict(None, f"store {p.target_store} does not exist")
        peer = region.peer_on(target.id)
        if peer is None or not peer.is_voter:
            return Verdict(None, f"store {target.id} holds no voter of region {region.id}")
        if region.leader_store_id == target.id:
            return Verdict(None, f"store {target.id} already leads region {region.id}")
        if why := filters.leader_target(target, now, cfg.schedule, set()):
            return Verdict(None, f"store {target.id}: {why}")
        op = transfer_leader(region, target.id, reason)
    elif p.kind in (ProposalKind.MOVE_PEER, ProposalKind.REMOVE_PEER):
        if region.peer_on(p.source_store) is None:
            return Verdict(None, f"region {region.id} has no peer on store {p.source_store}")
        if p.kind == ProposalKind.REMOVE_PEER:
            if len(region.voters) <= cfg.replication.max_replicas:
                return Verdict(None, f"removing it would leave region {region.id} under-replicated")
            op = remove_peer(region, p.source_store, reason, kind=OpKind.REGION)
        else:
            if target is None:
                return Verdict(None, f"store {p.target_store} does not exist")
            if region.peer_on(target.id) is not None:
                return Verdict(None, f"store {target.id} already holds region {region.id}")
            pending = view.tree.store_stats(target.id).pending_peer_count
            if why := filters.region_target(target, now, cfg.schedule, len(view.tree), pending):
                return Verdict(None, f"store {target.id}: {why}")
            # Placement rules must still hold after the move.
            moved = region.with_(
                peers=(
                    *(q for q in region.peers if q.store_id != p.source_store),
                    Peer(0, target.id),
                )
            )
            rules = rules_for(moved, rules_in_force or default_rules(cfg.replication))
            if not fit(moved, rules, stores).satisfied:
                return Verdict(None, "the move would break the placement rules")
            pid = new_id()
            if pid is None:
                return Verdict(None, "no peer id available yet")
            op = move_peer(
                region,
                p.source_store,
                target.id,
                pid,
                reason,
                joint=cfg.schedule.enable_joint_consensus,
            )
    else:
        return Verdict(None, f"proposal kind {p.kind.name} is not accepted from policies")
    if problem := controller.check(op, now):
        return Verdict(None, problem)
    op.scheduler = f"policy:{policy}"
    return Verdict(op, "")
