"""`kubepd policy add|list|remove`: Wasm scheduling policies on a running kubepd."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pdcore.cli import security_flags
from pdcore.cli.schedulers import Endpoint, call, show


def add_parser(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--pd", default="127.0.0.1:2381", help="status address of a kubepd (default 127.0.0.1:2381)"
    )
    common.add_argument("--json", action="store_true", help="print raw JSON")
    security_flags.add_client_arguments(common)
    p = sub.add_parser(
        "policy",
        help="add, list, remove WebAssembly scheduling policies live",
        description="Manage Wasm scheduling policies on a running kubepd without a restart.",
    )
    ps = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ps.add_parser("add", parents=[common], help="add or replace a policy")
    a.add_argument("name")
    a.add_argument("module", type=Path, help="the .wasm (or .wat) file")
    a.add_argument("--config", default="{}", help="the policy's JSON config (default {})")
    a.add_argument("--interval", type=float, default=10.0, help="seconds between runs (default 10)")
    a.add_argument("--sha256", help="expected digest of the module (checked before loading)")
    a.add_argument(
        "--failure-strategy",
        default="Disable",
        choices=["Disable", "Ignore", "Retry"],
        help="what a trap, timeout or bad output does to the policy (default Disable)",
    )
    a.add_argument("--fuel", type=int, default=100_000_000, help="fuel per run (default 1e8)")
    a.add_argument("--memory-mib", type=int, default=64, help="memory limit in MiB (default 64)")
    a.add_argument(
        "--timeout-ms", type=int, default=500, help="wall-clock deadline per run (default 500)"
    )
    a.add_argument("--priority", type=int, default=50, help="higher runs first (default 50)")
    ps.add_parser("list", parents=[common], help="policies with phase, digest, runs and proposals")
    r = ps.add_parser("remove", parents=[common], help="unload a policy")
    r.add_argument("name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pd = Endpoint.of(args)
    if args.action == "list":
        status, data = call(pd, "GET", "/policies")
        if status < 400 and not args.json:
            for p in data:
                print(
                    f"{p['name']:24} {p['phase']:9} runs={p['runs']} "
                    f"accepted={p['proposalsAccepted']} rejected={p['proposalsRejected']} "
                    f"digest={p['moduleDigest'][:12]} {p['lastError']}"
                )
            return 0
        return show(status, data, args.json)
    if args.action == "remove":
        return show(*call(pd, "DELETE", f"/policies/{args.name}"), args.json)
    try:
        config = json.loads(args.config)
        wasm = args.module.read_bytes()
    except (json.JSONDecodeError, OSError) as e:
        print(f"kubepd policy: {e}", file=sys.stderr)
        return 2
    body = {
        "name": args.name,
        "module": base64.b64encode(wasm).decode(),
        "config": config,
        "interval_s": args.interval,
        "failure_strategy": args.failure_strategy,
        "priority": args.priority,
        "sha256": args.sha256 or hashlib.sha256(wasm).hexdigest(),
        "limits": {"fuel": args.fuel, "memory_mib": args.memory_mib, "timeout_ms": args.timeout_ms},
    }
    return show(*call(pd, "POST", "/policies", body), args.json)
