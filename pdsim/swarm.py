"""The fault swarm: many seeds, each a scenario case under a fault schedule drawn from it.

A `FaultSchedule` is both the fleet's `Faults` (what to drop, refuse or delay) and the
runner's `Observer` (it takes stores down and brings them back, slows a store's
snapshots, restarts PD gracefully or as a crash, splits regions while replicas move,
and checks safety after every tick). After `quiet_after()` no more faults come, and the
case's own predicate must then hold within the case's bound (liveness). A failing seed
is replayed exactly by `kubepd simulate --case CASE --seed N --faults`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pdsim.cases import get
from pdsim.runner import Result, simulate
from pdsim.safety import SafetyChecker
from pdsim.world import World

# The cases a swarm seed draws from when none is given.
SWARM_CASES = (
    "add-nodes",
    "balance-leader",
    "delete-nodes",
    "makeup-down-replicas",
    "region-merge",
    "import-data",
    "merge-while-balancing",
)
FAULT_SPAN_S = 600.0  # faults come during the first this many simulated seconds
KINDS = (
    "drop-heartbeats",
    "drop-commands",
    "refuse-transfers",
    "delay-messages",
    "store-down",
    "slow-snapshots",
    "pd-restart",
    "splits",
)


@dataclass(frozen=True)
class Window:
    kind: str
    start_s: float
    end_s: float
    level: float  # a probability, a delay in seconds or a slow-down factor
    target: int  # a store index, where the kind has one

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def __str__(self) -> str:
        if self.kind == "pd-restart":
            how = "crash" if self.target % 2 else "graceful"
            return f"{self.kind}@{self.start_s:.0f}s({how})"
        return f"{self.kind}@{self.start_s:.0f}-{self.end_s:.0f}s(level={self.level:.2f})"


@dataclass
class FaultSchedule:
    seed: int
    windows: list[Window]
    checker: SafetyChecker = field(default_factory=SafetyChecker)
    span_s: float = FAULT_SPAN_S
    _rng: random.Random = field(init=False)
    _t: float = 0.0
    _down: dict[int, int] = field(default_factory=dict)  # window index -> store id
    _slowed: dict[int, int] = field(default_factory=dict)
    _restarted: set[int] = field(default_factory=set)
    _wired: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed * 7919 + 17)

    @classmethod
    def draw(cls, seed: int, span_s: float = FAULT_SPAN_S) -> FaultSchedule:
        rng = random.Random(seed)
        windows = []
        for _ in range(rng.randint(2, 6)):
            kind = rng.choice(KINDS)
            start = rng.uniform(0, span_s * 0.8)
            length = rng.uniform(20, span_s - start) if kind != "pd-restart" else 0.0
            level = {
                "drop-heartbeats": rng.uniform(0.1, 0.6),
                "drop-commands": rng.uniform(0.1, 0.6),
                "refuse-transfers": rng.uniform(0.2, 0.9),
                "delay-messages": rng.uniform(0.05, 3.0),
                "slow-snapshots": rng.uniform(3.0, 20.0),
            }.get(kind, 0.0)
            windows.append(Window(kind, start, start + length, level, rng.randrange(1 << 16)))
        return cls(seed, sorted(windows, key=lambda w: w.start_s), span_s=span_s)

    def describe(self) -> str:
        return ", ".join(map(str, self.windows)) or "no faults"

    def _level(self, kind: str) -> float:
        return max(
            (w.level for w in self.windows if w.kind == kind and w.active(self._t)), default=0.0
        )

    def _chance(self, kind: str) -> bool:
        p = self._level(kind)
        return p > 0 and self._rng.random() < p

    # -- Faults: asked by the fleet and the transport ------------------------------------
    def drop_heartbeat(self, region_id: int) -> bool:
        return self._chance("drop-heartbeats")

    def drop_command(self, region_id: int) -> bool:
        return self._chance("drop-commands")

    def refuse_transfer(self, region_id: int) -> bool:
        return self._chance("refuse-transfers")

    def delay_s(self, method: str, direction: str) -> float:
        level = self._level("delay-messages")
        return self._rng.uniform(0, level) if level else 0.0

    # -- Observer: driven by the runner every tick -----------------------------------------
    def quiet_after(self) -> float:
        return self.span_s

    async def tick(self, world: World, t: float) -> None:
        self._t = t
        fleet = world.fleet
        assert fleet is not None
        if not self._wired:
            self._wired = True
            fleet.on_id = lambda id_, what: self.checker.claim(self._t, id_, what)
        for i, w in enumerate(self.windows):
            if w.kind == "store-down":
                self._store_down(i, w, world)
            elif w.kind == "slow-snapshots":
                self._slow(i, w, world)
            elif w.kind == "pd-restart" and w.start_s <= t and i not in self._restarted:
                self._restarted.add(i)
                # The target already drawn picks crash or graceful, so the schedules
                # (and the regression seeds) stay as they were drawn.
                await world.restart_pd(crash=w.target % 2 == 1)
            elif w.kind == "splits" and w.active(t) and fleet.regions and self._rng.random() < 0.3:
                region = self._rng.choice(sorted(fleet.regions))
                fleet.split_soon(region)
        self.checker.check_fleet(t, fleet)
        self.checker.check_pd_regions(t, fleet, world.node())
        await self.checker.check_tso(t, fleet)

    def _store_down(self, i: int, w: Window, world: World) -> None:
        fleet = world.fleet
        assert fleet is not None
        if w.active(self._t) and i not in self._down:
            # One store down at a time, and only one that is up and in service.
            if any(j != i for j in self._down):
                return
            up = [sid for sid, s in sorted(fleet.stores.items()) if s.up and not s.removed]
            if len(up) < 4:
                return
            sid = up[w.target % len(up)]
            self._down[i] = sid
            fleet.stop_store(sid)
        elif not w.active(self._t) and i in self._down:
            sid = self._down.pop(i)
            if not fleet.stores[sid].removed:
                fleet.restart_store(sid)

    def _slow(self, i: int, w: Window, world: World) -> None:
        fleet = world.fleet
        assert fleet is not None
        if w.active(self._t) and i not in self._slowed:
            sids = sorted(fleet.stores)
            sid = sids[w.target % len(sids)]
            self._slowed[i] = sid
            fleet.stores[sid].snap_slowdown = w.level
        elif not w.active(self._t) and i in self._slowed:
            fleet.stores[self._slowed.pop(i)].snap_slowdown = 1.0


@dataclass
class SeedResult:
    seed: int
    case: str
    ok: bool
    safe: bool
    live: bool
    faults: str
    violations: list[str]
    result: Result

    def replay(self) -> str:
        return f"kubepd simulate --case {self.case} --seed {self.seed} --faults"

    def summary(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "case": self.case,
            "ok": self.ok,
            "safe": self.safe,
            "live": self.live,
            "faults": self.faults,
            "violations": self.violations[:5],
            "sim_seconds": self.result.sim_seconds,
            "operators": self.result.operators,
            "detail": self.result.detail,
            "replay": self.replay(),
        }


def case_for(seed: int, case: str | None = None) -> str:
    return case or SWARM_CASES[seed % len(SWARM_CASES)]


def run_seed(seed: int, case: str | None = None, transport: str = "inproc") -> SeedResult:
    """One seed: its case under its fault schedule, safety at every tick, liveness after."""
    name = case_for(seed, case)
    schedule = FaultSchedule.draw(seed)
    result = simulate(get(name), seed=seed, transport=transport, faults=schedule, observer=schedule)
    violations = [str(v) for v in schedule.checker.violations]
    safe = not violations
    return SeedResult(
        seed,
        name,
        safe and result.ok,
        safe,
        result.ok,
        schedule.describe(),
        violations,
        result,
    )


def run_swarm(
    seeds: range,
    case: str | None = None,
    transport: str = "inproc",
    on_result: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    out = []
    for seed in seeds:
        res = run_seed(seed, case, transport)
        out.append(res)
        if on_result is not None:
            on_result(res)
    return out
