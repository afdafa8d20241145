"""`kubepd scheduler ...` and `kubepd operator ...`: PD's scheduling API from the shell,
against a running kubepd's status address (like pd-ctl)."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from pdcore.cli import security_flags

PREFIX = "/pd/api/v1"


def add_parser(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--pd",
        default="127.0.0.1:2381",
        help="status address of a kubepd (HOST:PORT, default 127.0.0.1:2381; "
        "https://HOST:PORT or --cacert for TLS)",
    )
    common.add_argument("--json", action="store_true", help="print raw JSON")
    security_flags.add_client_arguments(common)

    s = sub.add_parser(
        "scheduler",
        help="list, add, remove, pause schedulers; ask why nothing is scheduled",
        description="Manage schedulers on a running kubepd at run time.",
    )
    ss = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    ss.add_parser("list", parents=[common], help="schedulers with state, interval and runs")
    a = ss.add_parser("add", parents=[common], help="add a scheduler by name")
    a.add_argument("name", help="e.g. balance-leader-scheduler, evict-leader-scheduler")
    a.add_argument("--store-id", type=int, help="store for evict-leader-scheduler")
    r = ss.add_parser("remove", parents=[common], help="remove a scheduler")
    r.add_argument("name")
    p = ss.add_parser("pause", parents=[common], help="pause a scheduler for SECONDS (0 resumes)")
    p.add_argument("name")
    p.add_argument("seconds", type=float)
    w = ss.add_parser("why", parents=[common], help="why a scheduler's last run did (not) schedule")
    w.add_argument("name")
    s.set_defaults(func=run_scheduler)

    o = sub.add_parser(
        "operator",
        help="list, add, cancel operators",
        description="Inspect and create operators on a running kubepd.",
    )
    os_ = o.add_subparsers(dest="action", required=True, metavar="ACTION")
    ol = os_.add_parser(
        "list", parents=[common], help="operators in flight (--history for finished)"
    )
    ol.add_argument("--history", action="store_true")
    oa = os_.add_parser("add", parents=[common], help="create an operator")
    oa.add_argument(
        "kind",
        choices=[
            "transfer-leader",
            "add-peer",
            "remove-peer",
            "transfer-peer",
            "split-region",
            "merge-region",
        ],
    )
    oa.add_argument("region_id", type=int)
    oa.add_argument("--to-store", type=int, help="transfer-leader / transfer-peer target store")
    oa.add_argument("--from-store", type=int, help="transfer-peer source store")
    oa.add_argument("--store", type=int, help="add-peer / remove-peer store")
    oa.add_argument("--target-region", type=int, help="merge-region target")
    orm = os_.add_parser("remove", parents=[common], help="cancel the operator of a region")
    orm.add_argument("region_id", type=int)
    o.set_defaults(func=run_operator)


@dataclass(frozen=True)
class Endpoint:
    """Where the commands send their requests: a status address, over TLS if asked."""

    address: str
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> Endpoint:
        address = args.pd.split("://", 1)[-1].rstrip("/")
        tls = security_flags.client_context(args)
        if tls is None and args.pd.startswith("https://"):
            tls = ssl.create_default_context()  # the system's CAs
        return cls(address, tls)

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"


def call(pd: Endpoint, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("KUBEPD_API_TOKEN")  # for a server run with --api-token-file
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"{pd.base}{PREFIX}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=pd.tls) as resp:
            return resp.status, _decoded(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, _decoded(e.read())
    except urllib.error.URLError as e:
        print(f"kubepd: cannot reach {pd.base}: {e.reason}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as e:  # e.g. a TLS server dropping a client without a certificate
        print(f"kubepd: cannot reach {pd.base}: {e or type(e).__name__}", file=sys.stderr)
        raise SystemExit(1) from None


def _decoded(body: bytes) -> Any:
    """JSON, or the text of a body that is not (a plain 404 page, say)."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def show(status: int, data: Any, as_json: bool) -> int:
    if status >= 400:
        print(f"error: {data}", file=sys.stderr)
        return 1
    if as_json or not isinstance(data, (list, dict)):
        print(json.dumps(data, indent=2) if not isinstance(data, str) else data)
    elif isinstance(data, list):
        for item in data:
            print(
                item
                if not isinstance(item, dict)
                else "  ".join(f"{k}={v}" for k, v in item.items() if k != "steps")
            )
    else:
        print(json.dumps(data, indent=2))
    return 0


def run_scheduler(args: argparse.Namespace) -> int:
    pd = Endpoint.of(args)
    if args.action == "list":
        status, data = call(pd, "GET", "/schedulers?detail=true")
        if status < 400 and not args.json:
            for s in data:
                state = "paused" if s["paused"] else "running"
                print(
                    f"{s['name']:36} {state:8} every {s['interval_s']:>6}s  runs={s['runs']} "
                    f"created={s['operators_created']}"
                )
            return 0
        return show(status, data, args.json)
    if args.action == "add":
        body: dict[str, Any] = {"name": args.name}
        if args.store_id is not None:
            body["store_id"] = args.store_id
        return show(*call(pd, "POST", "/schedulers", body), args.json)
    if args.action == "remove":
        return show(*call(pd, "DELETE", f"/schedulers/{args.name}"), args.json)
    if args.action == "pause":
        return show(
            *call(pd, "POST", f"/schedulers/{args.name}", {"delay": args.seconds}), args.json
        )
    status, data = call(pd, "GET", f"/schedulers/diagnostic/{args.name}")
    if status >= 400 or args.json:
        return show(status, data, args.json)
    print(f"{data['scheduler']}: {data['summary']}")
    for p in data.get("plans", []):
        print(f"  {p['stage']:8} {p['subject']:14} {p['reason']}")
    return 0


def run_operator(args: argparse.Namespace) -> int:
    pd = Endpoint.of(args)
    if args.action == "list":
        path = "/operators?history=true" if args.history else "/operators"
        return show(*call(pd, "GET", path), args.json)
    if args.action == "remove":
        return show(*call(pd, "DELETE", f"/operators/{args.region_id}"), args.json)
    body: dict[str, Any] = {"name": args.kind, "region_id": args.region_id}
    for flag, key in (
        ("to_store", "to_store_id"),
        ("from_store", "from_store_id"),
        ("store", "store_id"),
        ("target_region", "target_region_id"),
    ):
        if getattr(args, flag) is not None:
            body[key] = getattr(args, flag)
    return show(*call(pd, "POST", "/operators", body), args.json)
