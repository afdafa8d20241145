"""`kubepd demo`: an embedded kubepd scheduling a simulated TiKV fleet, live.

Three stores with a few thousand regions; two more stores join, then a hot spot
appears. The live view shows each store's regions and leaders, the operators in flight
and finished, and progress to balance; a summary ends it.

PD and the fleet run on virtual time (`pdsim.world`): what happens depends on the seed
alone. The display is paced for a person (`--speed` simulated seconds per wall second
at most) by pausing the whole simulation between ticks, so a busy machine only makes
the demo take longer; it never changes the outcome.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from pdcore.adapters import virtual_loop
from pdcore.app import PdServer
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet, FleetConfig
from pdsim.runner import TICK_S, distribution
from pdsim.world import World, WorldOptions

JOIN_AT_S = 60.0  # simulated seconds before two empty stores join
SHOW_BALANCED_S = 300.0  # simulated seconds the balanced cluster is shown before the end


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="watch kubepd balance a simulated TiKV fleet (embedded, no Kubernetes)",
        description="Start an embedded kubepd and a simulated fleet of 3 TiKV stores with "
        "--regions regions; after a while 2 more stores join and a hot spot appears. A live "
        "view shows the stores, operators and progress to balance; a summary ends it.",
    )
    p.add_argument("--regions", type=int, default=2000, help="regions at start (default 2000)")
    p.add_argument(
        "--speed",
        type=float,
        default=30.0,
        help="at most this many simulated seconds per wall second, for the eye (default 30; "
        "0: as fast as the machine goes). It paces the display only, never the outcome.",
    )
    p.add_argument(
        "--max-sim",
        type=float,
        default=3600.0,
        help="stop after this many simulated seconds even if not balanced (default 3600)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    p.set_defaults(func=run)


def spread(counts: list[int]) -> float:
    if not counts or not sum(counts):
        return 0.0
    mean = sum(counts) / len(counts)
    return max(abs(c - mean) for c in counts) / mean


def balance_progress(peers: list[int], leaders: list[int]) -> float:
    """0 when one store is 100 % off the mean, 1 when every store is within 5 %."""
    worst = max(spread(peers), spread(leaders))
    return max(0.0, min(1.0, (1.0 - worst) / 0.95))


def render(fleet: Fleet, server: PdServer, phase: str, t: float, wall: float) -> Group:
    d = distribution(fleet)
    table = Table(title=f"kubepd demo — {phase}", expand=True)
    for col in ("store", "zone", "state", "regions", "leaders", "", "snapshots"):
        table.add_column(
            col, justify="right" if col not in ("store", "zone", "state", "") else "left"
        )
    most = max(d["peers"].values() or [1])
    for sid, s in sorted(fleet.stores.items()):
        n = d["peers"].get(sid, 0)
        table.add_row(
            str(sid),
            s.labels.get("zone", ""),
            "Up" if s.up else "Down",
            str(n),
            str(d["leaders"].get(sid, 0)),
            ProgressBar(total=most, completed=n, width=30),
            f"{s.sending}↑ {s.receiving}↓",
        )
    sched = server.node.scheduling if server.node else None
    running = sched.operators() if sched else []
    history = sched.recent_operators() if sched else []
    kinds: dict[str, int] = {}
    for op in running:
        kinds[str(op["desc"])] = kinds.get(str(op["desc"]), 0) + 1
    done = sum(1 for op in history if op.status.value == "success")
    hot = (
        sorted(sched.hot_regions().items(), key=lambda kv: -kv[1].write_bytes)[:3] if sched else []
    )
    ops = Table.grid(padding=(0, 2))
    ops.add_row(
        "operators in flight", ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "none"
    )
    ops.add_row("finished", f"{done} succeeded, {len(history) - done} cancelled/timed out")
    ops.add_row(
        "hot regions (write)",
        ", ".join(f"{rid}: {st.write_bytes / 1e6:.1f} MB/s" for rid, st in hot) or "none",
    )
    ops.add_row("time", f"{t:.0f} s simulated in {wall:.0f} s of wall time")
    progress = balance_progress(list(d["peers"].values()), list(d["leaders"].values()))
    bar = ProgressBar(total=100, completed=progress * 100, width=60)
    return Group(
        table, Panel(ops, title="scheduling"), Panel(bar, title=f"balance {progress * 100:.0f} %")
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    return virtual_loop.run(lambda: _demo(args))


async def _demo(args: argparse.Namespace) -> int:
    console = Console()
    sched = ScheduleConfig(store_limit_add_peer=240.0, store_limit_remove_peer=240.0)
    world = World(
        WorldOptions(
            name="demo",
            config=ClusterConfig(sched, ReplicationConfig()),
            seed=args.seed,
            fleet=FleetConfig(region_hb_s=60.0),
        )
    )
    fleet = await world.start()
    server = world.server
    assert server is not None
    clock = world.clock
    console.print(
        f"kubepd (embedded, in process, virtual time, seed {args.seed}) with a simulated fleet"
    )
    wall0 = time.monotonic()
    phase = "3 stores, bootstrapping"
    joined = hot = False
    balanced_at: float | None = None
    try:
        await fleet.bootstrap(zones(3), round_robin(args.regions, 3), size_mib=16)
        t0 = clock.monotonic_s()
        live = (
            Live(
                render(fleet, server, phase, 0, 0),
                console=console,
                refresh_per_second=4,
                transient=False,
            )
            if console.is_terminal
            else None
        )
        if live:
            live.start()
        last_print = 0.0
        while True:
            await fleet.step()
            await clock.sleep(TICK_S)
            t, wall = clock.monotonic_s() - t0, time.monotonic() - wall0
            if args.speed > 0 and (ahead := t / args.speed - wall) > 0:
                time.sleep(ahead)  # pause the whole simulation: pacing, not an outcome
                wall = time.monotonic() - wall0
            if not joined and t >= JOIN_AT_S:
                for _ in range(2):
                    await fleet.add_store(
                        {"zone": f"z{len(fleet.stores) + 1}", "host": f"h{len(fleet.stores) + 1}"}
                    )
                joined, phase = True, "2 stores joined — balancing"
            d = distribution(fleet)
            prog = balance_progress(list(d["peers"].values()), list(d["leaders"].values()))
            if joined and not hot and prog >= 0.6:
                victims = [
                    r for r in fleet.regions.values() if r.leader_store == min(fleet.stores)
                ][:5]
                for r in victims:
                    r.write_rate = 4 << 20
                hot, phase = True, "hot spot on one store — spreading it"
            if joined and prog >= 1.0 and balanced_at is None:
                balanced_at = t
                phase = "balanced"
            if live:
                live.update(render(fleet, server, phase, t, wall))
            elif wall - last_print >= 5:
                last_print = wall
                print(
                    f"t={t:5.0f}s {phase}: peers={list(d['peers'].values())} "
                    f"leaders={list(d['leaders'].values())} balance={prog * 100:.0f}%",
                    flush=True,
                )
            if (balanced_at is not None and t - balanced_at > SHOW_BALANCED_S) or t > args.max_sim:
                break
        if live:
            live.stop()
        d = distribution(fleet)
        sched_svc = server.node.scheduling if server.node else None
        summary = Table(title="summary")
        summary.add_column("what")
        summary.add_column("value", justify="right")
        summary.add_row("stores / regions", f"{len(fleet.stores)} / {len(fleet.regions)}")
        finished = sched_svc.operators_finished() if sched_svc else 0
        summary.add_row("operators finished", str(finished))
        summary.add_row("replicas moved (snapshots)", str(fleet.stats.snapshots))
        summary.add_row("leaders transferred", str(fleet.stats.applied.get("transfer-leader", 0)))
        summary.add_row(
            "balanced after",
            f"{balanced_at:.0f} s simulated" if balanced_at else "not within the time limit",
        )
        summary.add_row("wall time", f"{time.monotonic() - wall0:.0f} s")
        summary.add_row("regions per store", " ".join(map(str, d["peers"].values())))
        summary.add_row("leaders per store", " ".join(map(str, d["leaders"].values())))
        console.print(summary)
        return 0 if balanced_at is not None else 1
    finally:
        await world.close()
