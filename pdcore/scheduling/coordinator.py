"""Coordinator: the one entry point the PD service drives. It owns the operator
controller, the running schedulers (each on its own adaptive interval), the checkers'
patrol over all regions, hot statistics and the scatterer."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pdcore.domain.commands import SplitPolicy
from pdcore.domain.region import Region
from pdcore.scheduling.checkers import (
    CheckContext,
    JointStateChecker,
    MergeChecker,
    RuleChecker,
)
from pdcore.scheduling.cluster import ClusterView
from pdcore.scheduling.controller import OperatorController, Send
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.operator import (
    Operator,
    OpKind,
    Priority,
    merge_region,
    remove_peer,
    transfer_leader,
)
from pdcore.scheduling.rules import Rule, default_rules
from pdcore.scheduling.scatter import Scatterer
from pdcore.scheduling.schedulers import registry
from pdcore.scheduling.schedulers.base import HotStat, SchedContext, Scheduler
from pdcore.scheduling.schedulers.evict_leader import EvictLeader
from pdcore.scheduling.steps import SplitStep

MIN_INTERVAL = 0.01
MAX_INTERVAL = 5.0
BACKOFF = 1.3
HOT_DECAY = 0.5
ROUNDS_PER_TICK = 16


@dataclass
class SchedulerState:
    scheduler: Scheduler
    interval: float = MIN_INTERVAL
    next_run: float = 0.0
    paused_until: float = 0.0
    last: Diagnosis | None = None
    runs: int = 0
    created: int = 0


@dataclass
class PatrolState:
    cursor: bytes = b""
    rounds: int = 0
    pending: dict[int, str] = field(default_factory=dict)  # region -> why nothing was done


class Coordinator:
    def __init__(
        self,
        view: ClusterView,
        new_id: Callable[[], int | None],
        rng: random.Random | None = None,
        started_at: float = 0.0,
        schedulers: tuple[str, ...] = registry.DEFAULTS,
    ) -> None:
        self.view = view
        self.new_id = new_id
        self.rng = rng or random.Random(0)
        self.controller = OperatorController(view)
        self.schedulers: dict[str, SchedulerState] = {}
        self.explicit_rules: list[Rule] | None = None
        self.hot: dict[int, HotStat] = {}
        self.joint_checker = JointStateChecker()
        self.rule_checker = RuleChecker()
        self.merge_checker = MergeChecker(started_at=started_at)
        self.patrol = PatrolState()
        self.scatterer = Scatterer()
        self.halted = False
        for name in schedulers:
            self.add_scheduler(name, {})

    # -- configuration ----------------------------------------------------------
    def rules(self) -> list[Rule]:
        return (
            self.explicit_rules
            if self.explicit_rules
            else default_rules(self.view.config.replication)
        )

    def set_rules(self, rules: list[Rule] | None) -> None:
        self.explicit_rules = rules

    def add_scheduler(self, name: str, args: dict[str, Any]) -> str:
        sched = registry.create(name, args)
        if sched.name in self.schedulers:
            existing = self.schedulers[sched.name].scheduler
            if isinstance(existing, EvictLeader) and isinstance(sched, EvictLeader):
                existing.store_ids = sorted(set(existing.store_ids) | set(sched.store_ids))
                return sched.name
            raise ValueError(f"scheduler {sched.name} already exists")
        self.schedulers[sched.name] = SchedulerState(sched)
        return sched.name

    def remove_scheduler(self, name: str) -> None:
        if name not in self.schedulers:
            raise KeyError(f"scheduler {name} not found")
        del self.schedulers[name]

    def configure_scheduler(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        state = self.schedulers.get(name)
        if state is None:
            raise KeyError(f"scheduler {name} not found")
        state.scheduler.update_config(changes)
        state.interval, state.next_run = MIN_INTERVAL, 0.0
        return state.scheduler.config()

    def pause_scheduler(self, name: str, seconds: float, now: float) -> None:
        state = self.schedulers.get(name)
        if state is None:
            raise KeyError(f"scheduler {name} not found")
        state.paused_until = now + seconds if seconds > 0 else 0.0

    def list_schedulers(self, now: float) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "paused": st.paused_until > now,
                "interval_s": round(st.interval, 3),
                "runs": st.runs,
                "operators_created": st.created,
                "config": st.scheduler.config(),
            }
            for n, st in sorted(self.schedulers.items())
        ]

    def diagnose(self, name: str) -> dict[str, Any]:
        if name == self.rule_checker.name:  # the patrol: regions it could not repair, why
            pending = sorted(self.patrol.pending.items())
            return {
                "scheduler": name,
                "summary": f"{len(pending)} regions need a repair that cannot be made yet",
                "plans": [{"region": rid, "reason": why} for rid, why in pending[:100]],
            }
        state = self.schedulers.get(name)
        if state is None:
            raise KeyError(f"scheduler {name} not found")
        if state.last is None:
            return {"scheduler": name, "summary": "not run yet", "plans": []}
        return state.last.as_json()

    def evicted_stores(self) -> set[int]:
        out: set[int] = set()
        for st in self.schedulers.values():
            if isinstance(st.scheduler, EvictLeader):
                out |= set(st.scheduler.store_ids)
        return out

    # -- heartbeats ------------------------------------------------------------------
    def on_region_heartbeat(self, region: Region, origin: Region | None, now: float) -> list[Send]:
        f = region.flow
        if f.interval_s > 0 and (f.bytes_written or f.bytes_read):
            st = self.hot.setdefault(region.id, HotStat())
            st.write_bytes = (
                HOT_DECAY * st.write_bytes + (1 - HOT_DECAY) * f.bytes_written / f.interval_s
            )
            st.read_bytes = (
                HOT_DECAY * st.read_bytes + (1 - HOT_DECAY) * f.bytes_read / f.interval_s
            )
            st.write_keys = f.keys_written / f.interval_s
            st.read_keys = f.keys_read / f.interval_s
            st.write_query = f.query_write / f.interval_s
            st.read_query = f.query_read / f.interval_s
        elif region.id in self.hot and f.interval_s > 0:  # a report without traffic
            st = self.hot[region.id]
            st.write_bytes *= HOT_DECAY
            st.read_bytes *= HOT_DECAY
            if st.write_bytes < 1 and st.read_bytes < 1:
                del self.hot[region.id]
        if (
            origin is not None
            and region.epoch.version > origin.epoch.version
            and (region.start_key != origin.start_key or region.end_key != origin.end_key)
        ) or origin is None:
            self.merge_checker.split_at[region.id] = now
        return self.controller.dispatch(region, now)

    # -- the periodic work ---------------------------------------------------------------
    def tick(self, now: float) -> list[Send]:
        out = self.controller.tick(now)
        if self.halted or self.view.config.schedule.halt_scheduling:
            return out
        ctx = SchedContext(
            self.view,
            self.controller,
            now,
            self.rng,
            self.new_id,
            hot=self.hot,
            evicted=self.evicted_stores(),
            rules=self.rules(),
        )
        for name, st in list(self.schedulers.items()):
            if st.paused_until > now or now < st.next_run:
                continue
            # PD reruns a productive scheduler every 10 ms; a tick may be longer than
            # that, so rerun here while it keeps producing (bounded per tick).
            for _ in range(ROUNDS_PER_TICK):
                added = self._run_scheduler(name, st, ctx, now, out)
                if not added:
                    break
        out.extend(self.patrol_batch(now))
        return out

    def _run_scheduler(
        self, name: str, st: SchedulerState, ctx: SchedContext, now: float, out: list[Send]
    ) -> int:
        diag = Diagnosis(name, at=now)
        ops = st.scheduler.schedule(ctx, diag)
        added = 0
        for op in ops:
            op.scheduler = name
            problem = self.controller.add(op, now)
            if problem is None:
                added += 1
                out.extend(self._first_send(op, now))
            else:
                diag.note("limit", f"region {op.region_id}", problem)
        diag.scheduled = added
        st.last, st.runs, st.created = diag, st.runs + 1, st.created + added
        st.interval = MIN_INTERVAL if added else min(MAX_INTERVAL, st.interval * BACKOFF)
        st.next_run = now + st.interval
        return added

    def _first_send(self, op: Operator, now: float) -> list[Send]:
        region = self.view.tree.get(op.region_id)
        return self.controller.dispatch(region, now, force=True) if region is not None else []

    def patrol_batch(self, now: float) -> list[Send]:
        tree = self.view.tree
        n = len(tree)
        if n == 0:
            return []
        batch = max(128, min(8192, n // 1024))
        regions = tree.scan(self.patrol.cursor, b"", batch)
        out: list[Send] = []
        ctx = CheckContext(
            self.view,
            self.rules(),
            now,
            self.new_id,
            {sid: float(inf.region_size) for sid, inf in self.controller.influence().items()},
        )
        for region in regions:
            if region.id in self.controller.running:
                continue
            op, why = self.joint_checker.check(region)
            checker = self.joint_checker.name
            if op is None and not why:
                op, why = self.rule_checker.check(ctx, region)
                checker = self.rule_checker.name
            ops = [op] if op is not None else []
            if (
                not ops
                and checker == self.rule_checker.name
                and self.controller.allowed(OpKind.MERGE)
            ):
                ops, why2 = self.merge_checker.check(ctx, region)
                why = why2 if not ops else why
            if not ops:
                if why != "region fits its rules":
                    self.patrol.pending[region.id] = why
                else:
                    self.patrol.pending.pop(region.id, None)
                continue
            self.patrol.pending.pop(region.id, None)
            problems = [self.controller.check(o, now) for o in ops]
            if any(problems):
                self.patrol.pending[region.id] = next(p for p in problems if p)
                continue
            for o in ops:
                o.scheduler = checker if o.kind & OpKind.REPLICA else self.merge_checker.name
                if self.controller.add(o, now) is None:
                    out.extend(self._first_send(o, now))
        last = regions[-1] if regions else None
        if last is None or not last.end_key:
            self.patrol.cursor = b""
            self.patrol.rounds += 1
        else:
            self.patrol.cursor = last.end_key
        return out

    # -- admin operators -----------------------------------------------------------------
    def add_admin_operator(
        self, kind: str, region_id: int, args: dict[str, Any], now: float
    ) -> tuple[Operator | None, str, list[Send]]:
        region = self.view.tree.get(region_id)
        if region is None:
            return None, f"region {region_id} not found", []
        try:
            ops = self._admin_ops(kind, region, args)
        except (ValueError, KeyError) as e:
            return None, str(e), []
        for op in ops:
            op.kind |= OpKind.ADMIN
            op.priority = Priority.URGENT
            op.scheduler = "admin"
        # A merge is two operators (source and target): both are admitted or neither.
        problem = next((p for p in (self.controller.check(o, now) for o in ops) if p), None)
        if problem is not None:
            return None, problem, []
        sends: list[Send] = []
        for op in ops:
            if self.controller.add(op, now) is None:
                sends.extend(self._first_send(op, now))
        return ops[0], "", sends

    def _admin_ops(self, kind: str, region: Region, args: dict[str, Any]) -> list[Operator]:
        if kind == "merge-region":
            target = self.view.tree.get(int(args.get("target_region_id", 0)))
            if target is None:
                raise ValueError("target_region_id must name a known region")
            if not (target.start_key == region.end_key or target.end_key == region.start_key):
                raise ValueError("regions to merge must be adjacent")
            ops = merge_region(
                region,
                target,
                self.new_id,
                "requested by an administrator",
                joint=self.view.config.schedule.enable_joint_consensus,
            )
            if ops is None:
                raise ValueError("regions to merge need the same number of voters and no learners")
            return list(ops)
        return [self._admin_op(kind, region, args)]

    def _admin_op(self, kind: str, region: Region, args: dict[str, Any]) -> Operator:
        from pdcore.scheduling.operator import add_peer, move_peer

        stores = {s.id: s for s in self.view.stores()}

        def store_arg(key: str) -> int:
            sid = args.get(key)
            if not isinstance(sid, int) or sid not in stores:
                raise ValueError(f"{key} must name a known store")
            return sid

        if kind == "transfer-leader":
            to = store_arg("to_store_id")
            if region.peer_on(to) is None:
                raise ValueError(f"region {region.id} has no peer on store {to}")
            return transfer_leader(region, to, "requested by an administrator")
        if kind == "add-peer":
            to = store_arg("store_id")
            if region.peer_on(to) is not None:
                raise ValueError(f"region {region.id} already has a peer on store {to}")
            pid = self.new_id()
            if pid is None:
                raise ValueError("no peer id available, retry")
            return add_peer(region, to, pid, "requested by an administrator")
        if kind == "remove-peer":
            frm = store_arg("store_id")
            if region.peer_on(frm) is None:
                raise ValueError(f"region {region.id} has no peer on store {frm}")
            return remove_peer(region, frm, "requested by an administrator")
        if kind == "transfer-peer":
            frm, to = store_arg("from_store_id"), store_arg("to_store_id")
            pid = self.new_id()
            if pid is None:
                raise ValueError("no peer id available, retry")
            return move_peer(region, frm, to, pid, "requested by an administrator")
        if kind == "split-region":
            policy = str(args.get("policy", "approximate")).upper()
            if policy not in SplitPolicy.__members__:
                raise ValueError("policy must be scan, approximate or usekey")
            keys = tuple(bytes.fromhex(k) for k in args.get("keys", []))
            return Operator(
                desc="split-region",
                region_id=region.id,
                epoch=region.epoch,
                kind=OpKind.SPLIT,
                steps=[SplitStep(region.start_key, region.end_key, SplitPolicy[policy], keys)],
                reason="requested by an administrator",
                region_size=region.approximate_size,
            )
        raise ValueError(f"unknown operator kind {kind!r}")

    def scatter_regions(
        self, region_ids: list[int], group: str, now: float
    ) -> tuple[int, list[int], list[Send]]:
        failed: list[int] = []
        sends: list[Send] = []
        stores = self.view.stores()
        for rid in region_ids:
            region = self.view.tree.get(rid)
            if region is None:
                failed.append(rid)
                continue
            op = self.scatterer.scatter(region, group, stores, self.new_id)
            if op is None:
                continue
            op.scheduler = "scatter"
            if self.controller.add(op, now) is not None:
                failed.append(rid)
            else:
                sends.extend(self._first_send(op, now))
        done = 100 * (len(region_ids) - len(failed)) // max(1, len(region_ids))
        return done, failed, sends

    def split_regions(self, keys: list[bytes], now: float) -> tuple[int, list[int], list[Send]]:
        by_region: dict[int, list[bytes]] = {}
        for k in keys:
            r = self.view.tree.find(k)
            if r is not None and k != r.start_key:
                by_region.setdefault(r.id, []).append(k)
        sends: list[Send] = []
        ok = 0
        for rid, ks in by_region.items():
            region = self.view.tree.get(rid)
            assert region is not None
            op = Operator(
                desc="split-region",
                region_id=rid,
                epoch=region.epoch,
                kind=OpKind.ADMIN | OpKind.SPLIT,
                steps=[
                    SplitStep(
                        region.start_key, region.end_key, SplitPolicy.USEKEY, tuple(sorted(ks))
                    )
                ],
                reason="SplitRegions request",
                priority=Priority.URGENT,
                region_size=region.approximate_size,
            )
            if self.controller.add(op, now) is None:
                ok += 1
                sends.extend(self._first_send(op, now))
        pct = 100 * ok // max(1, len(by_region)) if by_region else 100
        return pct, list(by_region), sends
