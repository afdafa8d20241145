"""The operator controller: admits operators under schedule and store limits, sends each
operator's current step to the region leader's store, judges progress from heartbeats,
re-sends, times out, cancels, and remembers what happened."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections import Counter, deque
from collections.abc import Iterable

from pdcore.domain.commands import RegionCommand
from pdcore.domain.config import ScheduleConfig
from pdcore.domain.region import Region
from pdcore.scheduling.cluster import ClusterView
from pdcore.scheduling.limits import UNLIMITED, LimitType, StoreLimits, TokenBucket, step_cost
from pdcore.scheduling.operator import (
    CREATED_EXPIRE_S,
    Operator,
    OpKind,
    OpStatus,
    StoreInfluence,
)
from pdcore.scheduling.steps import (
    AddLearnerStep,
    JointEnterStep,
    JointLeaveStep,
    MergeStep,
    PromoteLearnerStep,
    RemovePeerStep,
    SplitStep,
    TransferLeaderStep,
)

FAST_RESEND_S = 2.0
SLOW_RESEND_S = 5.0
HISTORY = 2000

Send = tuple[int, RegionCommand]


def kind_limit(cfg: ScheduleConfig, kind: OpKind) -> int | None:
    """The schedule limit an operator counts against (its most urgent kind)."""
    if kind & OpKind.ADMIN:
        return None
    if kind & OpKind.MERGE:
        return cfg.merge_schedule_limit
    if kind & OpKind.REPLICA:
        return cfg.replica_schedule_limit
    if kind & OpKind.SPLIT:
        return None
    if kind & OpKind.HOT_REGION:
        return cfg.hot_region_schedule_limit
    if kind & OpKind.REGION:
        return cfg.region_schedule_limit
    if kind & OpKind.LEADER:
        return cfg.leader_schedule_limit
    return None


@functools.cache
def primary_kind(kind: OpKind) -> OpKind:
    # Memoized: IntFlag arithmetic is slow, and admission counts running operators by
    # kind for every candidate (this loop was most of the demo's CPU).
    for k in OpKind:
        if kind & k:
            return k
    return kind


def _conf_changes(op: Operator) -> int:
    n = 0
    for s in op.steps:
        if isinstance(s, AddLearnerStep | PromoteLearnerStep | RemovePeerStep):
            n += 1
        elif isinstance(s, JointEnterStep):
            n += len(s.promote) + len(s.demote)
        elif isinstance(s, JointLeaveStep):
            n += 1
    return n


class OperatorController:
    def __init__(self, view: ClusterView) -> None:
        self.view = view
        sched = view.config.schedule
        self.limits = StoreLimits(sched.store_limit_add_peer, sched.store_limit_remove_peer)
        self.running: dict[int, Operator] = {}
        self.history: deque[Operator] = deque(maxlen=HISTORY)
        self._ids = itertools.count(1)
        self.counters: dict[str, int] = {}
        # Per-kind counts and influence sums of `running`, kept as operators come and go
        # (admission and every scheduler read them; summing each time cost most of the
        # demo's CPU). `_tracked` is what they describe; see _refresh.
        self._tracked: dict[int, Operator] = {}
        self._influence: dict[int, StoreInfluence] = {}
        self._kinds: Counter[OpKind] = Counter()

    # -- queries --------------------------------------------------------------
    def count(self, kind: OpKind) -> int:
        self._refresh()
        return self._kinds.get(primary_kind(kind), 0)

    def allowed(self, kind: OpKind) -> bool:
        limit = kind_limit(self.view.config.schedule, kind)
        return limit is None or self.count(kind) < limit

    def get(self, region_id: int) -> Operator | None:
        op = self.running.get(region_id)
        if op is not None:
            return op
        for past in reversed(self.history):
            if past.region_id == region_id:
                return past
        return None

    def influence(self) -> dict[int, StoreInfluence]:
        """What the running operators will change on each store: a fresh copy callers
        may change."""
        self._refresh()
        return {sid: dataclasses.replace(inf) for sid, inf in self._influence.items()}

    def _refresh(self) -> None:
        """Rebuild the sums if `running` was changed behind the controller's back (the
        comparison is by identity first, so it is cheap when nothing was)."""
        if self.running != self._tracked:
            self._tracked, self._influence, self._kinds = {}, {}, Counter()
            for op in self.running.values():
                self._track(op)

    def _track(self, op: Operator, sign: int = 1) -> None:
        if sign > 0:
            self._tracked[op.region_id] = op
        elif self._tracked.get(op.region_id) is op:
            del self._tracked[op.region_id]
        else:
            return
        self._kinds[primary_kind(op.kind)] += sign
        for store, inf in op.influence.items():
            t = self._influence.setdefault(store, StoreInfluence())
            t.region_size += sign * inf.region_size
            t.region_count += sign * inf.region_count
            t.leader_size += sign * inf.leader_size
            t.leader_count += sign * inf.leader_count
            t.add_peer += sign * inf.add_peer
            t.remove_peer += sign * inf.remove_peer

    def _count(self, event: str, op: Operator) -> None:
        key = f"{op.desc}:{event}"
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- admission ----------------------------------------------------------------
    def check(self, op: Operator, now: float) -> str | None:
        """Why `op` cannot be added now, or None."""
        region = self.view.tree.get(op.region_id)
        if region is None:
            return f"region {op.region_id} no longer exists"
        if region.epoch != op.epoch:
            return f"region {op.region_id} epoch changed since the operator was made"
        existing = self.running.get(op.region_id)
        if existing is not None and existing.priority >= op.priority:
            return f"region {op.region_id} already has operator {existing.desc}"
        if not self.allowed(op.kind) and existing is None:
            return f"{primary_kind(op.kind).label()} schedule limit reached"
        if not (op.kind & OpKind.ADMIN):
            cost = step_cost(op.region_size)
            for store, inf in op.influence.items():
                for kind, n in (
                    (LimitType.ADD_PEER, inf.add_peer),
                    (LimitType.REMOVE_PEER, inf.remove_peer),
                ):
                    if n and not self._bucket(store, kind, now).available(cost * n, now):
                        return f"store {store} {kind.value} limit exceeded"
        return None

    def _bucket(self, store: int, kind: LimitType, now: float) -> TokenBucket:
        s = self.view.get_store(store)
        leaving = s is not None and (
            s.is_offline or s.is_down(now, self.view.config.schedule.max_store_down_time_s)
        )
        if leaving and kind == LimitType.REMOVE_PEER:
            # Nothing to protect on a store that is draining or dead.
            return TokenBucket(UNLIMITED)
        sched = self.view.config.schedule
        self.limits.set_defaults(sched.store_limit_add_peer, sched.store_limit_remove_peer)
        return self.limits.bucket(store, kind)

    def add(self, op: Operator, now: float) -> str | None:
        """Admit `op` (None) or say why not; replaces a lower-priority operator."""
        problem = self.check(op, now)
        if problem is not None:
            return problem
        existing = self.running.pop(op.region_id, None)
        if existing is not None:
            existing.finish(OpStatus.REPLACED, now, f"replaced by {op.desc}")
            self._retire(existing)
        if not (op.kind & OpKind.ADMIN):
            cost = step_cost(op.region_size)
            for store, inf in op.influence.items():
                if inf.add_peer:
                    self._bucket(store, LimitType.ADD_PEER, now).take(cost * inf.add_peer, now)
                if inf.remove_peer:
                    self._bucket(store, LimitType.REMOVE_PEER, now).take(
                        cost * inf.remove_peer, now
                    )
        op.id = next(self._ids)
        op.created_at = now
        op.step_started_at = now
        self.running[op.region_id] = op
        self._track(op)
        self._count("create", op)
        return None

    def cancel(self, region_id: int, now: float, reason: str) -> Operator | None:
        op = self.running.pop(region_id, None)
        if op is not None:
            op.finish(OpStatus.CANCELED, now, reason)
            self._retire(op)
        return op

    def _retire(self, op: Operator) -> None:
        self._track(op, -1)
        self.history.append(op)
        self._count(op.status.value, op)

    # -- progress ------------------------------------------------------------------
    def dispatch(self, region: Region, now: float, force: bool = False) -> list[Send]:
        """Judge the region's operator from this heartbeat; the command to send, if any."""
        op = self.running.get(region.id)
        if op is None:
            return []
        return self._step(op, region, now, force)

    def _step(self, op: Operator, region: Region, now: float, force: bool) -> list[Send]:
        if region.epoch.version != op.epoch.version and not any(
            isinstance(s, MergeStep | SplitStep) for s in op.steps
        ):
            self._end(op, OpStatus.CANCELED, now, "region version changed underneath")
            return []
        if region.epoch.conf_ver > op.epoch.conf_ver + _conf_changes(op):
            self._end(op, OpStatus.CANCELED, now, "region membership changed underneath")
            return []
        before = op.step_index
        if op.advance(region):
            self._end(op, OpStatus.SUCCESS, now, "")
            return []
        if op.step_index != before:
            op.step_started_at = now
            op.last_sent_at = -1e18
        step = op.current
        assert step is not None
        lost = self._lost_target(op, now)
        if lost:
            # A snapshot to a dead store never finishes: give the region back to the
            # checkers now instead of holding it for the step's whole timeout.
            self._end(op, OpStatus.CANCELED, now, lost)
            return []
        if now - op.step_started_at > step.timeout(op.region_size):
            self._end(op, OpStatus.TIMEOUT, now, f"step '{step.describe()}' timed out")
            return []
        interval = SLOW_RESEND_S if step.slow else FAST_RESEND_S
        if not force and now - op.last_sent_at < interval:
            return []
        body = step.command(region)
        if body is None:
            if isinstance(step, RemovePeerStep) and region.leader_store_id == step.from_store:
                self._end(op, OpStatus.CANCELED, now, "cannot remove the peer that leads")
            elif isinstance(step, MergeStep) and step.passive:
                pass  # the target waits for the source's merge
            return []
        if region.leader is None:
            return []
        op.last_sent_at = now  # an attempt: re-sent on the step's cadence either way
        cmd = RegionCommand(region.id, region.epoch, region.leader, body)
        return [(region.leader_store_id, cmd)]

    def delivered(self, region_id: int, now: float) -> None:
        """The region's step reached a stream to its leader's store: its operator has
        started. Until then it is CREATED and expires (`tick`) as PD's do."""
        op = self.running.get(region_id)
        if op is not None and op.status == OpStatus.CREATED:
            op.status = OpStatus.STARTED
            op.started_at = now

    def _lost_target(self, op: Operator, now: float) -> str:
        """Why a store the operator still has to add a peer to or hand the leader to can
        no longer take it (gone, down, offline, tombstone); empty if every one can."""
        max_down = self.view.config.schedule.max_store_down_time_s
        for step in op.steps[op.step_index :]:
            if isinstance(step, AddLearnerStep | PromoteLearnerStep | TransferLeaderStep):
                targets: tuple[int, ...] = (step.to_store,)
            elif isinstance(step, JointEnterStep):
                targets = tuple(p.store_id for p in step.promote)
            else:
                continue
            for sid in targets:
                store = self.view.get_store(sid)
                if store is None or store.is_tombstone:
                    return f"target store {sid} is gone"
                if store.is_offline:
                    return f"target store {sid} is going offline"
                if store.last_heartbeat_ns and store.is_down(now, max_down):
                    return f"target store {sid} is down"
        return ""

    def _end(self, op: Operator, status: OpStatus, now: float, reason: str) -> None:
        op.finish(status, now, reason)
        if self.running.get(op.region_id) is op:
            del self.running[op.region_id]
        self._retire(op)

    def tick(self, now: float) -> list[Send]:
        """Re-send unfinished steps, time out stuck ones, expire never-started ones,
        and finish merges whose source region has gone."""
        out: list[Send] = []
        for op in list(self.running.values()):
            region = self.view.tree.get(op.region_id)
            if region is None:
                if any(isinstance(s, MergeStep) and not s.passive for s in op.steps):
                    self._end(op, OpStatus.SUCCESS, now, "source region merged away")
                else:
                    self._end(op, OpStatus.CANCELED, now, "region disappeared")
                continue
            # No step delivered within the expiry (and one re-send): a leaderless
            # region, or no stream to its leader's store. A merge's passive target
            # sends nothing of its own and waits for its source.
            step = op.current
            if (
                op.status == OpStatus.CREATED
                and now - op.created_at > CREATED_EXPIRE_S + FAST_RESEND_S
                and not (isinstance(step, MergeStep) and step.passive)
            ):
                self._end(op, OpStatus.EXPIRED, now, "never started: no step was delivered")
                continue
            out.extend(self._step(op, region, now, force=False))
        return out

    def finished(self) -> Iterable[Operator]:
        return iter(self.history)
