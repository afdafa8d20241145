"""`kubepd simulate`: scenario cases and fault swarms on virtual time."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from pdsim.cases import CASES, get
from pdsim.fleet import Fleet
from pdsim.runner import distribution, simulate
from pdsim.swarm import FaultSchedule, SeedResult, case_for, run_seed
from pdsim.world import TRANSPORTS


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="run a scheduling scenario (or a fault swarm) against an embedded kubepd",
        description="Run an embedded kubepd and a simulated TiKV fleet on virtual time: "
        "simulated seconds pass only when PD and the fleet are idle, so a seed gives the "
        "same result on an idle or a busy machine. One case runs until its success "
        "predicate holds or its bound passes; the last line printed is a JSON summary and "
        "the exit code is 0 only when the predicate held. With --swarm, N seeds each run "
        "a case under a random fault schedule drawn from the seed, checking safety at "
        "every tick and liveness after the faults stop.",
    )
    p.add_argument("--case", help="the case to run (see --list); with --swarm, only this case")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of every random choice (PD's, the fleet's, the faults'); "
        "with --swarm, the first seed (default 1)",
    )
    p.add_argument(
        "--faults",
        action="store_true",
        help="run the case under the fault schedule its seed draws (what --swarm runs; "
        "the command a failing swarm seed prints)",
    )
    p.add_argument(
        "--swarm",
        type=int,
        metavar="N",
        default=0,
        help="run N seeds, each with its own fault schedule; exit 1 if any fails",
    )
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="inproc",
        help="inproc: PD and the fleet in one event loop, messages encoded as on the wire "
        "(default, repeats exactly); grpc: real gRPC over loopback, in lockstep with the "
        "virtual clock",
    )
    p.add_argument("--quiet", action="store_true", help="print only the JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, case in CASES.items():
            print(f"{name:26} {case.description}")
        return 0
    if args.case is not None and args.case not in CASES:
        print(f"kubepd simulate: unknown case {args.case!r} (see --list)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.swarm:
        return _swarm(args)
    if not args.case:
        print("kubepd simulate: give --case NAME, --swarm N or --list", file=sys.stderr)
        return 2
    if args.faults:
        res = run_seed(args.seed, args.case, args.transport)
        if not args.quiet:
            print(f"faults: {res.faults}", flush=True)
            for v in res.violations:
                print(f"safety: {v}", flush=True)
        print(json.dumps(res.summary()), flush=True)
        return 0 if res.ok else 1
    case = get(args.case)

    def progress(fleet: Fleet, server: object, t: float, detail: str) -> None:
        if args.quiet:
            return
        d = distribution(fleet)
        print(
            f"[{case.name}] t={t:6.0f}s regions={len(fleet.regions)} "
            f"peers={list(d['peers'].values())} leaders={list(d['leaders'].values())} "
            f"| {detail}",
            flush=True,
        )

    result = simulate(case, seed=args.seed, transport=args.transport, progress=progress)
    if not args.quiet:
        print(f"wall time: {result.wall_seconds:.1f} s", file=sys.stderr, flush=True)
    print(result.json(), flush=True)
    return 0 if result.ok else 1


def _swarm(args: argparse.Namespace) -> int:
    seeds = range(args.seed, args.seed + args.swarm)
    failed: list[SeedResult] = []
    wall0 = time.monotonic()
    for done, seed in enumerate(seeds, 1):
        if not args.quiet:
            name = case_for(seed, args.case)
            _bar(
                done - 1, len(seeds), f"seed {seed}: {name} — {FaultSchedule.draw(seed).describe()}"
            )
        res = run_seed(seed, args.case, args.transport)
        if not res.ok:
            failed.append(res)
            if not args.quiet:
                why = "; ".join(res.violations[:3]) or f"not live: {res.result.detail}"
                print(f"\nFAILED seed {seed} ({res.case}): {why}\n  replay: {res.replay()}")
    wall = time.monotonic() - wall0
    if not args.quiet:
        _bar(len(seeds), len(seeds), "done")
        print()
    summary = {
        "seeds": len(seeds),
        "failed": [r.summary() for r in failed],
        "wall_seconds": round(wall, 1),
        "seeds_per_minute": round(len(seeds) / max(wall, 1e-9) * 60, 2),
    }
    print(json.dumps(summary), flush=True)
    return 1 if failed else 0


def _bar(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / max(1, total))
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}"
    print("\r" + line[:160].ljust(160), end="", file=sys.stderr, flush=True)
