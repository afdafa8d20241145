"""Scheduling convergence: 5 stores x 20,000 regions, then 2 empty stores join.
Reports simulated time to balance (every store within 5 % on regions and leaders),
operators used vs the minimum, and CPU. PD and the simulated fleet share this process,
so the CPU figure is an upper bound for PD's own."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time

from _common import progress

from pdcore.adapters.clock import ScaledClock
from pdcore.app import PdServer, ServerOptions
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdsim.cases import round_robin, uniform, zones
from pdsim.fleet import Fleet, FleetConfig
from pdsim.runner import default_min_moves, distribution

REGIONS = int(os.environ.get("BENCH_REGIONS", "20000"))
SPEED = float(os.environ.get("BENCH_SPEED", "10"))
LIMIT = float(os.environ.get("BENCH_STORE_LIMIT", "600"))


async def main() -> int:
    clock = ScaledClock(SPEED)
    sched = ScheduleConfig(store_limit_add_peer=LIMIT, store_limit_remove_peer=LIMIT)
    server = PdServer(
        ServerOptions(
            name="bench",
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            sched_clock=clock,
            config=ClusterConfig(sched, ReplicationConfig()),
        )
    )
    await server.start()
    fleet = Fleet(
        server.client_address, server.status_address, clock, FleetConfig(region_hb_s=600.0)
    )
    progress(f"bootstrapping 5 stores x {REGIONS} regions")
    await fleet.bootstrap(zones(5), round_robin(REGIONS, 5), size_mib=96)
    for _ in range(2):
        await fleet.add_store(
            {"zone": f"z{len(fleet.stores) + 1}", "host": f"h{len(fleet.stores) + 1}"}
        )
    before = distribution(fleet)
    cpu0, t0, wall0 = time.process_time(), clock.monotonic_s(), time.monotonic()
    last = 0.0
    balanced = None
    checked = 0.0
    while time.monotonic() - wall0 < 1500:
        await fleet.step()
        await asyncio.sleep(0.01)
        if time.monotonic() - checked < 2.0:
            continue
        checked = time.monotonic()
        d = distribution(fleet)
        ok = uniform(d["peers"])[0] and uniform(d["leaders"])[0]
        if ok:
            balanced = clock.monotonic_s() - t0
            break
        if time.monotonic() - last > 10:
            last = time.monotonic()
            progress(f"sim {clock.monotonic_s() - t0:.0f}s peers={list(d['peers'].values())}")
    after = distribution(fleet)
    ctrl = server.node.scheduling.coordinator.controller  # type: ignore[union-attr]
    created = sum(n for k, n in ctrl.counters.items() if k.endswith(":create"))
    print(f"regions: {REGIONS}, stores: 5 + 2, store limit: {LIMIT:.0f}/min, speed: {SPEED}x")
    print(
        f"balanced after: {balanced:.0f} s simulated"
        if balanced
        else "not balanced within the wall bound"
    )
    moves = fleet.stats.applied.get("add-learner", 0) + fleet.stats.applied.get(
        "transfer-leader", 0
    )
    print(
        f"operators created: {created}; moves (peers added + leaders moved): {moves}; "
        f"minimum: {default_min_moves(before, after)}"
    )
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    print(f"wall: {wall:.0f} s, process CPU (PD + fleet): {cpu:.0f} s ({cpu / wall * 100:.0f} %)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    await fleet.close()
    await server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
