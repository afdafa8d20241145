"""Run one scenario: an embedded kubepd (in-memory store) and the simulated fleet on
virtual time (`pdsim.world`), the case's events, and its success predicate.

Everything is measured in simulated seconds; for a seed the in-process run repeats
exactly, whatever else the machine is doing."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pdcore.adapters import virtual_loop
from pdcore.app import PdServer
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdsim.faults import Faults, NoFaults
from pdsim.fleet import Fleet, FleetConfig
from pdsim.world import World, WorldOptions

TICK_S = 1.0  # simulated seconds between fleet ticks (store/region heartbeat pacing)
CHECK_EVERY_S = 5.0  # simulated seconds between evaluations of a case's predicate

Event = tuple[float, Callable[[Fleet], Awaitable[None]]]  # (simulated seconds, action)


@dataclass
class Case:
    name: str
    description: str
    store_labels: list[dict[str, str]]
    layout: list[tuple[int, list[int]]]
    predicate: Callable[[Fleet], tuple[bool, str]]
    bound_s: float
    size_mib: int = 64
    schedule: dict[str, Any] = field(default_factory=dict)
    replication: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    prepare: Callable[[Fleet], None] | None = None
    # Called with the embedded server before the fleet starts (e.g. to swap schedulers).
    prepare_server: Callable[[PdServer], None] | None = None
    settle_s: float = 20.0  # the predicate is judged only after this much sim time
    hold_s: float = 0.0  # the predicate must hold this long (stable-env)
    min_moves: Callable[[dict[str, Any], dict[str, Any]], int] | None = None


@dataclass
class Result:
    case: str
    seed: int
    transport: str
    ok: bool
    sim_seconds: float
    operators: int
    moves: int
    min_moves: int
    stores: int
    regions: int
    detail: str
    # Not in the JSON summary: it is the one figure that depends on the machine.
    wall_seconds: float = field(default=0.0, compare=False)

    def json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "wall_seconds"}
        return json.dumps(data, sort_keys=False)


def distribution(fleet: Fleet) -> dict[str, Any]:
    peers: dict[int, int] = {sid: 0 for sid, s in fleet.stores.items() if not s.removed}
    leaders: dict[int, int] = dict(peers)
    for r in fleet.regions.values():
        for p in r.peers:
            if p.store_id in peers:
                peers[p.store_id] += 1
        if r.leader_store in leaders:
            leaders[r.leader_store] += 1
    return {"peers": peers, "leaders": leaders}


def default_min_moves(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Peers and leaders that had to arrive somewhere: sum of positive changes."""
    total = 0
    for key in ("peers", "leaders"):
        for sid, n in after[key].items():
            total += max(0, n - before[key].get(sid, 0))
    return total


Progress = Callable[[Fleet, PdServer, float, str], None]


class Observer(Protocol):
    """Watches a run tick by tick (the swarm: faults and safety checks)."""

    async def tick(self, world: World, t: float) -> None: ...

    def quiet_after(self) -> float:
        """Simulated seconds after which no more faults come; the predicate and the case's
        bound count from there."""
        ...


def world_options(
    case: Case,
    seed: int = 1,
    transport: str = "inproc",
    fleet_config: FleetConfig | None = None,
    faults: Faults | None = None,
) -> WorldOptions:
    sched = ScheduleConfig(
        **{**{"split_merge_interval_s": 3600.0, "max_store_down_time_s": 1800.0}, **case.schedule}
    )
    return WorldOptions(
        name=f"sim-{case.name}",
        config=ClusterConfig(sched, ReplicationConfig(**case.replication)),
        transport=transport,
        seed=seed,
        fleet=fleet_config,
        faults=faults or NoFaults(),
    )


async def run_case(
    case: Case,
    seed: int = 1,
    transport: str = "inproc",
    progress: Progress | None = None,
    fleet_config: FleetConfig | None = None,
    faults: Faults | None = None,
    observer: Observer | None = None,
) -> Result:
    """Run `case` on the running loop, which must be a `VirtualEventLoop`."""
    world = World(world_options(case, seed, transport, fleet_config, faults))
    wall0 = time.monotonic()
    fleet = await world.start()
    assert world.server is not None
    if case.prepare_server is not None:
        case.prepare_server(world.server)
    clock = world.clock
    try:
        await fleet.bootstrap(case.store_labels, case.layout, size_mib=case.size_mib)
        if case.prepare is not None:
            case.prepare(fleet)
        before = distribution(fleet)
        t0 = clock.monotonic_s()
        events = sorted(case.events, key=lambda e: e[0])
        quiet = observer.quiet_after() if observer is not None else 0.0
        ok, detail, held_since = False, "", None
        last_report = last_check = -1e9
        while True:
            await fleet.step()
            await clock.sleep(TICK_S)
            t = clock.monotonic_s() - t0
            while events and events[0][0] <= t:
                _, ev = events.pop(0)
                await ev(fleet)
            if observer is not None:
                await observer.tick(world, t)
            if t >= case.settle_s + quiet and not events and t - last_check >= CHECK_EVERY_S:
                last_check = t
                good, detail = case.predicate(fleet)
                if good:
                    held_since = t if held_since is None else held_since
                    if t - held_since >= case.hold_s:
                        ok = True
                        break
                else:
                    held_since = None
            if progress is not None and t - last_report >= 5.0:
                last_report = t
                assert world.server is not None
                progress(fleet, world.server, t, detail)
            if t > case.bound_s + quiet:
                break
        after = distribution(fleet)
        moves = fleet.stats.applied.get("add-learner", 0) + fleet.stats.applied.get(
            "transfer-leader", 0
        )
        mm = (case.min_moves or default_min_moves)(before, after)
        return Result(
            case.name,
            seed,
            transport,
            ok,
            round(clock.monotonic_s() - t0, 1),
            world.operators_created(),
            moves,
            mm,
            len([s for s in fleet.stores.values() if not s.removed]),
            len(fleet.regions),
            detail,
            wall_seconds=round(time.monotonic() - wall0, 1),
        )
    finally:
        await world.close()


def simulate(case: Case, **options: Any) -> Result:
    """Run `case` to its end on a fresh virtual-time loop (the synchronous entry point);
    `options` are those of `run_case`."""

    async def main() -> Result:
        return await run_case(case, **options)

    return virtual_loop.run(main)
