"""`kubepd serve`: a complete single-node PD with the embedded store."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from pdcore.adapters.http.access import ApiAccess
from pdcore.adapters.net import DEFAULT_MAX_MESSAGE_BYTES
from pdcore.adapters.storage.data_dir import DataDirError
from pdcore.app import PdServer, ServerOptions
from pdcore.cli import logs, security_flags
from pdcore.domain.errors import PdError

log = logging.getLogger("kubepd.serve")

# Flags a config file may set, with their types (file keys use dashes or underscores).
CONFIG_KEYS: dict[str, type] = {
    "name": str,
    "data_dir": str,
    "client_urls": str,
    "advertise_client_urls": str,
    "status_addr": str,
    "log_level": str,
    "log_format": str,
    "max_message_bytes": int,
    "client_port_http": str,
}


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run a single-node PD with the embedded store (no Kubernetes needed)",
        description="Run a complete single-node Placement Driver: the PD gRPC API for TiKV "
        "and PD clients, durable metadata in one SQLite file under --data-dir, PD's HTTP "
        "API, /health and Prometheus /metrics on --status-addr, and scheduling.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with any of the flags below (dashes or underscores); "
        "flags given on the command line win",
    )
    p.add_argument("--name", default=None, help="this member's name (default: pd)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory for the embedded store file kubepd.db (default: ./data/NAME)",
    )
    p.add_argument(
        "--client-urls",
        default=None,
        help="URL to listen on for PD gRPC and PD's HTTP API, one port as PD "
        "(default: http://127.0.0.1:2379)",
    )
    p.add_argument(
        "--advertise-client-urls",
        default=None,
        help="URL clients are told to use, in GetMembers (default: --client-urls)",
    )
    p.add_argument(
        "--status-addr",
        default=None,
        help="HOST:PORT for /health, /metrics and /pd/api/v1 (default: 127.0.0.1:2381)",
    )
    p.add_argument(
        "--client-port-http",
        default=None,
        choices=["on", "off"],
        help="serve PD's HTTP API on the client URL beside gRPC; 'off' leaves the client "
        "port to gRPC alone (HTTP stays on --status-addr) (default: on)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=None,
        help=f"largest gRPC message accepted (default: {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    security_flags.add_arguments(p, "[security] ")
    p.add_argument(
        "--api-read-only",
        action="store_true",
        help="refuse every write on the HTTP API (403): stores, config, schedulers, "
        "operators, policies; reads stay open",
    )
    p.add_argument(
        "--api-token-file",
        metavar="FILE",
        default=None,
        help="HTTP API writes need 'Authorization: Bearer <the token in FILE>' (401 "
        "otherwise); reads stay open",
    )
    p.add_argument(
        "--force-new-cluster",
        action="store_true",
        help="start a new cluster even though --data-dir holds one (its files are kept, "
        "renamed *.old-TIME); without it a missing or damaged database is refused",
    )
    p.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    p.add_argument(
        "--log-format",
        default=None,
        choices=["json", "text"],
        help="structured JSON lines or readable text (default: json)",
    )
    p.set_defaults(func=run)


def load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    data = security_flags.read_toml(path)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "security":
            out["security"] = security_flags.table(value, path)
            continue
        name = key.replace("-", "_")
        if name not in CONFIG_KEYS:
            raise SystemExit(f"kubepd: unknown key {key!r} in config file {path}")
        if not isinstance(value, CONFIG_KEYS[name]):
            raise SystemExit(
                f"kubepd: key {key!r} in {path} must be a {CONFIG_KEYS[name].__name__}"
            )
        out[name] = value
    return out


def access_of(args: argparse.Namespace) -> ApiAccess:
    token = ""
    path = getattr(args, "api_token_file", None)
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise SystemExit(f"kubepd: cannot read --api-token-file {path}: {e}") from None
        if not token:
            raise SystemExit(f"kubepd: --api-token-file {path} is empty")
    return ApiAccess(read_only=bool(getattr(args, "api_read_only", False)), token=token)


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "name": "pd",
        "data_dir": None,
        "client_urls": "http://127.0.0.1:2379",
        "advertise_client_urls": None,
        "status_addr": "127.0.0.1:2381",
        "log_level": "info",
        "log_format": "json",
        "max_message_bytes": DEFAULT_MAX_MESSAGE_BYTES,
        "client_port_http": "on",
    }
    merged = {**defaults, **load_config(args.config)}
    for key in CONFIG_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    if merged["client_port_http"] not in ("on", "off"):
        raise SystemExit(
            f"kubepd: client-port-http must be 'on' or 'off', not {merged['client_port_http']!r}"
        )
    if merged["data_dir"] is None:
        merged["data_dir"] = f"data/{merged['name']}"
    return merged


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    logs.setup(cfg["log_level"], cfg["log_format"])
    options = ServerOptions(
        name=cfg["name"],
        data_dir=cfg["data_dir"],
        client_urls=[u.strip() for u in cfg["client_urls"].split(",")],
        advertise_client_urls=(
            [u.strip() for u in cfg["advertise_client_urls"].split(",")]
            if cfg["advertise_client_urls"]
            else None
        ),
        status_addr=cfg["status_addr"],
        max_message_bytes=cfg["max_message_bytes"],
        http_on_client_port=cfg["client_port_http"] != "off",
        force_new_cluster=bool(getattr(args, "force_new_cluster", False)),
        security=security_flags.security_of(args, cfg.get("security")),
        api_access=access_of(args),
    )
    return asyncio.run(_serve(options))


async def _serve(options: ServerOptions) -> int:
    try:
        server = PdServer(options)
    except DataDirError as e:
        log.error("cannot start: %s", e)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except (OSError, ValueError, DataDirError, PdError) as e:  # PdError: storage failed
        log.error("cannot start: %s", e)
        await server.stop(0)
        return 1
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    log.info("stopped")
    return 0
