"""The `kubepd` command: one entry point, one sub-command per role."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pdcore.cli import grpc_env

grpc_env.apply(os.environ)  # before any sub-command imports grpc

# Sub-command modules, each with `add_parser(subparsers)`; optional ones may be absent
# while their feature is being built.
SUBCOMMANDS = (
    "pdcore.cli.serve",
    "pdcore.cli.sidecar",
    "pdcore.cli.scheduler_host",
    "pdcore.cli.simulate",
    "pdcore.cli.demo",
    "pdcore.cli.schedulers",
    "pdcore.cli.policy",
    "pdcore.cli.tikv_standin",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubepd",
        description="kubepd: a Placement Driver for TiKV that runs inside Kubernetes, "
        "or alone with an embedded store.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            if e.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
