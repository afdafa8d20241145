"""SchedulingService: runs the pure Coordinator against the PD node and delivers its
commands through the StepSink.

Time is the scheduling clock (which runs faster than wall time in the simulator). Peer
ids for new replicas come from a pool the service refills through the node's durable
ID allocator, so the pure core never waits on storage.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pdcore.domain.config import ClusterConfig
from pdcore.domain.region import Region
from pdcore.ports import Clock, StepSink
from pdcore.scheduling.cluster import ClusterView
from pdcore.scheduling.controller import Send
from pdcore.scheduling.coordinator import Coordinator
from pdcore.scheduling.operator import Operator, OpStatus
from pdcore.scheduling.prepare import PrepareChecker
from pdcore.scheduling.rules import Rule
from pdcore.scheduling.schedulers.base import HotStat

log = logging.getLogger("kubepd.scheduling")

# Seconds of the scheduling clock between coordinator ticks (schedulers keep their
# own intervals inside it).
SCHEDULE_TICK_S = 0.05
ID_POOL_LOW = 64
ID_POOL_BATCH = 512
BURY_EVERY_S = 10.0

_WIRE_STATUS = {  # pdpb.OperatorStatus
    OpStatus.SUCCESS: 0,
    OpStatus.TIMEOUT: 1,
    OpStatus.CANCELED: 2,
    OpStatus.REPLACED: 3,
    OpStatus.CREATED: 4,
    OpStatus.STARTED: 4,
    OpStatus.EXPIRED: 2,
}


class NodeView(ClusterView, Protocol):
    async def alloc_id(self, count: int = 1) -> int: ...

    async def bury_empty_offline_stores(self) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    desc: str
    kind: str
    status: int


class SchedulingService:
    def __init__(
        self,
        view: NodeView,
        sink: StepSink,
        clock: Clock,
        config: ClusterConfig,
        rng: random.Random | None = None,
        active: Callable[[], bool] | None = None,
        may_bury: Callable[[], bool] | None = None,
        tick_s: float = SCHEDULE_TICK_S,
    ) -> None:
        # `active`: whether this process holds the scheduler role right now;
        # `may_bury`: whether it writes store metadata (the pd-leader does).
        self.active = active or (lambda: True)
        self.may_bury = may_bury or self.active
        self.tick_s = tick_s
        self.view = view
        self.sink = sink
        self.clock = clock
        self.ids: deque[int] = deque()
        self.coordinator = Coordinator(
            view, self._take_id, rng=rng or random.Random(), started_at=clock.now_s()
        )
        self.prepare = PrepareChecker()
        self._held = False
        self._task: asyncio.Task[None] | None = None
        self._refilling = False
        self._last_bury = 0.0
        self.sent = 0
        self.undelivered = 0

    def _take_id(self) -> int | None:
        if len(self.ids) < ID_POOL_LOW:
            self._refill()
        return self.ids.popleft() if self.ids else None

    def _refill(self) -> None:
        if self._refilling or not self.active():
            return
        self._refilling = True

        async def refill() -> None:
            try:
                last = await self.view.alloc_id(ID_POOL_BATCH)
                self.ids.extend(range(last - ID_POOL_BATCH + 1, last + 1))
            except Exception:
                log.warning("could not reserve peer ids", exc_info=True)
            finally:
                self._refilling = False

        try:
            asyncio.get_running_loop().create_task(refill())
        except RuntimeError:
            self._refilling = False

    def now(self) -> float:
        # Wall time of the scheduling clock: store heartbeat ages are measured in it.
        return self.clock.now_s()

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._refill()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduling")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self.tick_s)
            try:
                await self.tick_once()
            except Exception:
                log.exception("scheduling tick failed")

    async def tick_once(self) -> None:
        now = self.now()
        # An offline store with no regions left becomes Tombstone, whoever schedules.
        if self.may_bury() and now - self._last_bury >= BURY_EVERY_S:
            self._last_bury = now
            for sid in await self.view.bury_empty_offline_stores():
                log.info("store buried", extra={"store": sid})
        if self.scheduling_now():
            self._deliver(self.coordinator.tick(now))

    def _deliver(self, sends: list[Send]) -> None:
        for store_id, cmd in sends:
            if self.sink.send(store_id, cmd):
                self.sent += 1
                self.coordinator.controller.delivered(cmd.region_id, self.now())
            else:
                self.undelivered += 1

    def scheduling_now(self) -> bool:
        """Whether schedulers and checkers run now: the role is held and, since it was
        taken, the region view has caught up (the prepared gate)."""
        held = self.active()
        if held != self._held:
            self._held = held
            if held:
                self.prepare.taken(self.now())
            else:
                self.prepare.lost()
        return held and self.prepare.check(self.view, self.now())

    def heard(self, region_id: int) -> None:
        """A region's copy came live (a heartbeat, the pd-leader's region sync), not
        from storage: it counts towards the prepared gate."""
        self.prepare.heard_from(region_id)

    # -- called by the node on every accepted heartbeat ----------------------------
    def on_region_heartbeat(self, region: Region, origin: Region | None) -> None:
        self.prepare.heard_from(region.id)
        if not self.active():
            return
        self._deliver(self.coordinator.on_region_heartbeat(region, origin, self.now()))

    # -- API pass-throughs -----------------------------------------------------------
    def get_operator(self, region_id: int) -> OperatorInfo | None:
        op = self.coordinator.controller.get(region_id)
        if op is None:
            return None
        return OperatorInfo(op.desc, op.kind.label(), _WIRE_STATUS[op.status])

    def scatter_regions(self, region_ids: list[int], group: str) -> tuple[int, list[int]]:
        done, failed, sends = self.coordinator.scatter_regions(region_ids, group, self.now())
        self._deliver(sends)
        return done, failed

    def split_regions(self, keys: list[bytes]) -> tuple[int, list[int]]:
        pct, ids, sends = self.coordinator.split_regions(keys, self.now())
        self._deliver(sends)
        return pct, ids

    def add_operator(
        self, kind: str, region_id: int, args: dict[str, Any]
    ) -> tuple[Operator | None, str]:
        op, problem, sends = self.coordinator.add_admin_operator(kind, region_id, args, self.now())
        self._deliver(sends)
        return op, problem

    def operators(self) -> list[dict[str, object]]:
        return [op.summary() for op in self.coordinator.controller.running.values()]

    def running_operators(self) -> list[Operator]:
        return list(self.coordinator.controller.running.values())

    def find_operator(self, region_id: int) -> Operator | None:
        """The region's running operator, else its most recent finished one."""
        return self.coordinator.controller.get(region_id)

    def cancel_operator(self, region_id: int, reason: str) -> bool:
        """Cancel the region's running operator; False when there was none."""
        return self.coordinator.controller.cancel(region_id, self.now(), reason) is not None

    def cancel_all(self, reason: str) -> int:
        return sum(self.cancel_operator(rid, reason) for rid in list(self.running_ids()))

    def running_ids(self) -> list[int]:
        return list(self.coordinator.controller.running)

    def admit_operator(self, op: Operator) -> str | None:
        """Add an operator built outside the coordinator (a policy's proposal) and send
        its first step now; why not, or None."""
        problem = self.coordinator.controller.add(op, self.now())
        if problem is None:
            self._deliver(self.coordinator._first_send(op, self.now()))
        return problem

    def take_id(self) -> int | None:
        """A peer id from the reserved pool (None while it is being refilled)."""
        return self._take_id()

    def operators_created(self) -> int:
        counters = self.coordinator.controller.counters
        return sum(n for key, n in counters.items() if key.endswith(":create"))

    def operators_finished(self) -> int:
        counters = self.coordinator.controller.counters
        return sum(n for key, n in counters.items() if not key.endswith(":create"))

    def recent_operators(self, limit: int = 100) -> list[Operator]:
        return list(self.coordinator.controller.history)[-limit:]

    def hot_regions(self) -> dict[int, HotStat]:
        return self.coordinator.hot

    def diagnose(self, name: str) -> dict[str, Any]:
        """Why a scheduler did nothing; first, whether schedulers run at all yet."""
        out = self.coordinator.diagnose(name)
        if self.active() and not self.scheduling_now():
            out = {**out, "summary": self.prepare.reason}
        return out

    def set_rules(self, rules: list[Rule] | None) -> None:
        self.coordinator.set_rules(rules)

    def summary(self) -> dict[str, Any]:
        """What scheduling is doing, or why it is doing nothing, in a few words."""
        coord = self.coordinator
        running = self.running_operators()
        finished = self.operators_finished()
        halted = coord.halted or self.view.config.schedule.halt_scheduling
        if halted:
            text = "scheduling is halted"
        elif self.active() and not self.scheduling_now():
            text = self.prepare.reason
        elif running:
            kinds: dict[str, int] = {}
            for op in running:
                kinds[op.desc] = kinds.get(op.desc, 0) + 1
            text = "running: " + ", ".join(f"{n} {d}" for d, n in sorted(kinds.items()))
        else:
            idle = [
                f"{name}: {st.last.summary or 'nothing scheduled'}"
                for name, st in sorted(coord.schedulers.items())
                if st.last is not None
            ]
            text = "; ".join(idle) or "no scheduler has run yet"
        return {
            "operatorsInFlight": len(running),
            "operatorsFinished": finished,
            "halted": bool(halted),
            "summary": text[:1024],
        }

    def history(self, limit: int = 100) -> list[dict[str, object]]:
        return [op.summary() for op in self.recent_operators(limit)]
