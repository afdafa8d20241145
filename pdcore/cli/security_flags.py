"""TLS settings as PD spells them, shared by the commands that serve PD's API: the
flags --cacert, --cert, --key (and --cert-allowed-cn), and the config file's
[security] table with cacert-path, cert-path, key-path and cert-allowed-cn."""

from __future__ import annotations

import argparse
import ssl
import tomllib
from pathlib import Path
from typing import Any

from pdcore.adapters.tls import Security

TABLE_KEYS: dict[str, type] = {
    "cacert-path": str,
    "cert-path": str,
    "key-path": str,
    "cert-allowed-cn": list,
}
FLAGS = {"cacert": "cacert-path", "cert": "cert-path", "key": "key-path"}


def add_arguments(p: argparse.ArgumentParser, table_hint: str = "") -> None:
    """`table_hint`: how a config file spells each one (e.g. "[security] "), if it can."""

    def hint(key: str) -> str:
        return f" ({table_hint}{key})" if table_hint else ""

    p.add_argument(
        "--cacert",
        metavar="FILE",
        default=None,
        help="CA certificate (PEM): serve gRPC and HTTP over mutual TLS; clients must "
        f"present a certificate it signed{hint('cacert-path')}",
    )
    p.add_argument(
        "--cert",
        metavar="FILE",
        default=None,
        help="this server's certificate (PEM, also presented to other members); with "
        f"--key, gRPC and HTTP use TLS; reloaded when the file changes{hint('cert-path')}",
    )
    p.add_argument(
        "--key", metavar="FILE", default=None, help=f"the key of --cert{hint('key-path')}"
    )
    p.add_argument(
        "--cert-allowed-cn",
        metavar="NAMES",
        default=None,
        help="comma-separated common names a client certificate must carry one of "
        f"(PERMISSION_DENIED / 403 otherwise){hint('cert-allowed-cn')}",
    )


def table(value: Any, path: str) -> dict[str, Any]:
    """A config file's [security] table, checked; SystemExit names what is wrong."""
    if not isinstance(value, dict):
        raise SystemExit(f"kubepd: [security] in {path} must be a table")
    for key, item in value.items():
        want = TABLE_KEYS.get(key.replace("_", "-"))
        if want is None:
            raise SystemExit(f"kubepd: unknown key {key!r} in [security] of {path}")
        if not isinstance(item, want) or (
            isinstance(item, list) and not all(isinstance(v, str) for v in item)
        ):
            kind = "list of strings" if want is list else want.__name__
            raise SystemExit(f"kubepd: [security] {key!r} in {path} must be a {kind}")
    return {k.replace("_", "-"): v for k, v in value.items()}


def read_toml(path: str) -> dict[str, Any]:
    """A config file's contents; SystemExit when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SystemExit(f"kubepd: cannot read config file {path}: {e}") from None


def security_file(path: str | None) -> dict[str, Any]:
    """The [security] table of a config file that holds nothing else (the commands
    whose only file settings are these); SystemExit names what is wrong."""
    if not path:
        return {}
    data = read_toml(path)
    for key in data:
        if key != "security":
            raise SystemExit(f"kubepd: unknown key {key!r} in config file {path}")
    return table(data.get("security", {}), path)


def security_of(args: argparse.Namespace, from_file: dict[str, Any] | None = None) -> Security:
    """Flags win over the file's table."""
    t = dict(from_file or {})
    for flag, key in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            t[key] = value
    names = getattr(args, "cert_allowed_cn", None)
    if names is not None:
        t["cert-allowed-cn"] = [n.strip() for n in names.split(",") if n.strip()]
    sec = Security(
        cacert_path=t.get("cacert-path", ""),
        cert_path=t.get("cert-path", ""),
        key_path=t.get("key-path", ""),
        cert_allowed_cn=tuple(t.get("cert-allowed-cn", ())),
    )
    try:
        sec.check()
    except ValueError as e:
        raise SystemExit(f"kubepd: {e}") from None
    return sec


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """pd-ctl's flags for calling a kubepd that serves TLS."""
    p.add_argument(
        "--cacert", metavar="FILE", default=None, help="CA certificate (PEM): call over https"
    )
    p.add_argument("--cert", metavar="FILE", default=None, help="client certificate (PEM)")
    p.add_argument("--key", metavar="FILE", default=None, help="the key of --cert")


def client_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The SSL context those flags ask for (None: plain HTTP); SystemExit names what
    is wrong."""
    cacert, cert, key = args.cacert, args.cert, args.key
    if bool(cert) != bool(key):
        raise SystemExit("kubepd: a certificate and its key go together: set both --cert and --key")
    if not (cacert or cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cacert)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise SystemExit(f"kubepd: cannot use the TLS files: {e}") from None
    return ctx
