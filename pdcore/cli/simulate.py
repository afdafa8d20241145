"""`kubepd simulate`: run a scenario case against an embedded kubepd and a simulated fleet."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pdsim.cases import CASES, get
from pdsim.fleet import Fleet
from pdsim.runner import distribution, run_case


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="run a scheduling scenario against an embedded kubepd and a simulated TiKV fleet",
        description="Start an embedded kubepd, a simulated TiKV fleet that talks to it over "
        "gRPC, and run one scenario case until its success predicate holds or its time "
        "bound passes. Prints progress, then one JSON summary line last. Exit 0 only when "
        "the predicate held.",
    )
    p.add_argument("--case", help="the case to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per wall second (default: the case's own)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed for the fleet")
    p.add_argument("--quiet", action="store_true", help="print only the JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, case in CASES.items():
            print(f"{name:26} {case.description}")
        return 0
    if not args.case:
        print("kubepd simulate: give --case NAME or --list", file=sys.stderr)
        return 2
    try:
        case = get(args.case)
    except KeyError as e:
        print(f"kubepd simulate: {e.args[0]}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

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

    result = asyncio.run(run_case(case, speed=args.speed, seed=args.seed, progress=progress))
    print(result.json(), flush=True)
    return 0 if result.ok else 1
