"""Run one scenario: an embedded kubepd (in-memory store, scaled scheduling clock), the
simulated fleet over real gRPC, the case's events, and its success predicate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pdcore.adapters.clock import ScaledClock
from pdcore.app import PdServer, ServerOptions
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdsim.fleet import Fleet, FleetConfig

Event = tuple[float, Callable[[Fleet], Awaitable[None]]]


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
    speed: float = 60.0
    settle_s: float = 20.0  # the predicate is judged only after this much sim time
    hold_s: float = 0.0  # the predicate must hold this long (stable-env)
    min_moves: Callable[[dict[str, Any], dict[str, Any]], int] | None = None


@dataclass
class Result:
    case: str
    ok: bool
    sim_seconds: float
    wall_seconds: float
    operators: int
    moves: int
    min_moves: int
    stores: int
    regions: int
    detail: str

    def json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=False)


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


async def run_case(
    case: Case,
    speed: float | None = None,
    seed: int = 1,
    progress: Progress | None = None,
    fleet_config: FleetConfig | None = None,
) -> Result:
    clock = ScaledClock(speed or case.speed)
    sched = ScheduleConfig(
        **{**{"split_merge_interval_s": 3600.0, "max_store_down_time_s": 1800.0}, **case.schedule}
    )
    repl = ReplicationConfig(**case.replication)
    server = PdServer(
        ServerOptions(
            name=f"sim-{case.name}",
            data_dir=None,
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            sched_clock=clock,
            config=ClusterConfig(sched, repl),
        )
    )
    await server.start()
    if case.prepare_server is not None:
        case.prepare_server(server)
    fleet = Fleet(server.client_address, server.status_address, clock, fleet_config, seed=seed)
    wall0 = time.monotonic()
    try:
        await fleet.bootstrap(case.store_labels, case.layout, size_mib=case.size_mib)
        if case.prepare is not None:
            case.prepare(fleet)
        before = distribution(fleet)
        t0 = clock.monotonic_s()
        events = sorted(case.events, key=lambda e: e[0])
        ok, detail, held_since = False, "", None
        last_report = -1e9
        while True:
            await fleet.step()
            await asyncio.sleep(fleet.cfg.tick_wall_s)
            t = clock.monotonic_s() - t0
            while events and events[0][0] <= t:
                _, ev = events.pop(0)
                await ev(fleet)
            if t >= case.settle_s and not events:
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
                progress(fleet, server, t, detail)
            if t > case.bound_s:
                break
        after = distribution(fleet)
        assert server.node is not None and server.node.scheduling is not None
        ctrl = server.node.scheduling.coordinator.controller  # type: ignore[attr-defined]
        operators = len(ctrl.history) + len(ctrl.running)
        moves = fleet.stats.applied.get("add-learner", 0) + fleet.stats.applied.get(
            "transfer-leader", 0
        )
        mm = (case.min_moves or default_min_moves)(before, after)
        return Result(
            case.name,
            ok,
            round(clock.monotonic_s() - t0, 1),
            round(time.monotonic() - wall0, 1),
            operators,
            moves,
            mm,
            len([s for s in fleet.stores.values() if not s.removed]),
            len(fleet.regions),
            detail,
        )
    finally:
        await fleet.close()
        await server.stop(0)
