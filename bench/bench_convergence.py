"""Scheduling convergence on virtual time: 5 stores x N regions, then 2 empty stores join.

Reports, per size, simulated seconds to balance (every store within 5 % on regions and
leaders), operators and moves vs the minimum, wall and CPU time, and simulated seconds
per wall second. PD and the fleet share this process on a virtual clock, so the
simulated figures repeat exactly for a seed and only the wall/CPU figures depend on the
machine. Sizes: BENCH_REGIONS (comma-separated, default "5000,20000").
"""

from __future__ import annotations

import os
import resource
import sys
import time

from _common import progress

from pdcore.adapters import virtual_loop
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdsim.cases import round_robin, uniform, zones
from pdsim.fleet import FleetConfig
from pdsim.runner import CHECK_EVERY_S, TICK_S, default_min_moves, distribution
from pdsim.world import World, WorldOptions

SIZES = [int(x) for x in os.environ.get("BENCH_REGIONS", "5000,20000").split(",")]
LIMIT = float(os.environ.get("BENCH_STORE_LIMIT", "600"))
BOUND_SIM_S = float(os.environ.get("BENCH_BOUND_SIM_S", "20000"))


async def converge(regions: int) -> dict[str, float]:
    sched = ScheduleConfig(store_limit_add_peer=LIMIT, store_limit_remove_peer=LIMIT)
    world = World(
        WorldOptions(
            name="bench",
            config=ClusterConfig(sched, ReplicationConfig()),
            fleet=FleetConfig(region_hb_s=600.0),
        )
    )
    fleet = await world.start()
    clock = world.clock
    progress(f"bootstrapping 5 stores x {regions} regions")
    await fleet.bootstrap(zones(5), round_robin(regions, 5), size_mib=96)
    for _ in range(2):
        await fleet.add_store(
            {"zone": f"z{len(fleet.stores) + 1}", "host": f"h{len(fleet.stores) + 1}"}
        )
    before = distribution(fleet)
    cpu0, t0, wall0 = time.process_time(), clock.monotonic_s(), time.monotonic()
    balanced = None
    last = checked = 0.0
    while clock.monotonic_s() - t0 < BOUND_SIM_S:
        await fleet.step()
        await clock.sleep(TICK_S)
        if clock.monotonic_s() - checked < CHECK_EVERY_S:
            continue
        checked = clock.monotonic_s()
        d = distribution(fleet)
        if uniform(d["peers"])[0] and uniform(d["leaders"])[0]:
            balanced = clock.monotonic_s() - t0
            break
        if time.monotonic() - last > 10:
            last = time.monotonic()
            progress(f"  sim {clock.monotonic_s() - t0:.0f}s peers={list(d['peers'].values())}")
    after = distribution(fleet)
    sim = clock.monotonic_s() - t0
    wall = time.monotonic() - wall0
    out = {
        "regions": regions,
        "balanced_sim_s": balanced if balanced is not None else -1,
        "operators": world.operators_created(),
        "moves": fleet.stats.applied.get("add-learner", 0)
        + fleet.stats.applied.get("transfer-leader", 0),
        "min_moves": default_min_moves(before, after),
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
        "sim_per_wall": sim / max(wall, 1e-9),
    }
    await world.close()
    return out


def main() -> int:
    print(f"store limit {LIMIT:.0f}/min; 5 stores + 2 joining; virtual time")
    print(
        f"{'regions':>8} {'balanced (sim s)':>17} {'operators':>10} {'moves':>7} "
        f"{'min':>7} {'wall s':>7} {'CPU s':>7} {'sim s/wall s':>13}"
    )
    ok = True
    for n in SIZES:
        r = virtual_loop.run(lambda n=n: converge(n))  # type: ignore[misc]
        ok = ok and r["balanced_sim_s"] >= 0
        print(
            f"{n:>8} {r['balanced_sim_s']:>17.0f} {r['operators']:>10.0f} {r['moves']:>7.0f} "
            f"{r['min_moves']:>7.0f} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
            f"{r['sim_per_wall']:>13.1f}",
            flush=True,
        )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
