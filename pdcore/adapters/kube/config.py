"""Where the API server is and how to prove who we are: a kubeconfig file, or the pod's
service account (in-cluster). Plain data, read once; the client builds its TLS context
from it.

Supported: `token`, `tokenFile`, client certificates (file or inline `-data`),
`certificate-authority` (file or inline `-data`), `insecure-skip-tls-verify`, relative
paths (against the kubeconfig's directory), a `--context` other than the current one.
Not supported: exec and auth-provider plugins (a clear error says so).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """The kubeconfig (or the in-cluster environment) cannot be used; says why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    token: str | None = None
    token_file: str | None = None  # re-read now and then: projected tokens rotate
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    insecure: bool = False
    namespace: str | None = None  # the context's (or the pod's) namespace


def _pick(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, dict) else {}
    raise ConfigError(f"kubeconfig names {what} {name!r} but does not define it")


def _data(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def load_kubeconfig(
    path: str | os.PathLike[str] | None = None, context: str | None = None
) -> Credentials:
    """Credentials from a kubeconfig: `path`, else the first file of $KUBECONFIG, else
    ~/.kube/config."""
    if path is None:
        env = os.environ.get("KUBECONFIG", "")
        path = next((p for p in env.split(os.pathsep) if p), str(Path.home() / ".kube" / "config"))
    file = Path(path)
    try:
        cfg = yaml.safe_load(file.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read kubeconfig {file}: {e}") from None
    ctx_name = context or cfg.get("current-context")
    if not ctx_name:
        raise ConfigError(f"kubeconfig {file} has no current-context")
    ctx = _pick(cfg.get("contexts", []), ctx_name, "context")
    cluster = _pick(cfg.get("clusters", []), ctx.get("cluster", ""), "cluster")
    user = _pick(cfg.get("users", []), ctx.get("user", ""), "user") if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"kubeconfig user {ctx.get('user')!r}: exec/auth-provider plugins are not supported"
        )
    if "server" not in cluster:
        raise ConfigError(f"kubeconfig cluster {ctx.get('cluster')!r} has no server")
    base = file.parent

    def rel(p: str | None) -> str | None:
        return str(base / p) if p else None  # an absolute p stays as it is

    return Credentials(
        server=str(cluster["server"]),
        token=user.get("token"),
        token_file=rel(user.get("tokenFile")),
        ca_file=rel(cluster.get("certificate-authority")),
        ca_data=_data(cluster.get("certificate-authority-data")),
        cert_file=rel(user.get("client-certificate")),
        key_file=rel(user.get("client-key")),
        cert_data=_data(user.get("client-certificate-data")),
        key_data=_data(user.get("client-key-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=ctx.get("namespace"),
    )


def in_cluster(sa_dir: Path = SA_DIR) -> Credentials:
    """Credentials of the pod's service account (token and CA at the standard paths)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (sa_dir / "token").exists():
        raise ConfigError(
            "not running in a pod: no KUBERNETES_SERVICE_HOST or service-account token"
        )
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ns_file = sa_dir / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        token_file=str(sa_dir / "token"),
        ca_file=str(sa_dir / "ca.crt"),
        namespace=ns_file.read_text().strip() if ns_file.exists() else None,
    )


def auto(kubeconfig: str | os.PathLike[str] | None = None, sa_dir: Path = SA_DIR) -> Credentials:
    """An explicit kubeconfig or $KUBECONFIG wins; then the pod's service account; then
    ~/.kube/config."""
    if kubeconfig or os.environ.get("KUBECONFIG") or not (sa_dir / "token").exists():
        return load_kubeconfig(kubeconfig)
    return in_cluster(sa_dir)
