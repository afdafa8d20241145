"""Build the Go conformance programs once, cached by the hash of their sources.

The Go module cache and build cache live under ~/.cache/kubepd/go so a warm run pays
nothing; a program is keyed by its go.mod, go.sum and .go files, and etcdctl (built
from the Go module proxy) by its version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).parent / "goclient"
ETCD_CLIENT = Path(__file__).parent / "etcdclient"
HTTP_CLIENT = Path(__file__).parent / "gohttp"
CACHE = Path.home() / ".cache" / "kubepd"
ETCDCTL_VERSION = "v3.5.21"  # the etcd release PD 8.5 embeds


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "go" / "mod"),
        GOCACHE=str(CACHE / "go" / "build"),
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod",
    )
    return env


def _need_go() -> None:
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed for the conformance tests: install Go")


def build_program(src: Path, name: str) -> Path:
    _need_go()
    digest = hashlib.sha256()
    for f in sorted(src.iterdir()):
        if f.suffix in {".go", ".mod", ".sum"}:
            digest.update(f.name.encode() + f.read_bytes())
    out = CACHE / "conformance" / digest.hexdigest()[:16] / name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(out), "."], cwd=src, env=go_env(), check=True)
    return out


def build_pdclient() -> Path:
    return build_program(HERE, "pdclient")


def build_pdhttp() -> Path:
    """The driver of PD's Go HTTP client (github.com/tikv/pd/client/http)."""
    return build_program(HTTP_CLIENT, "pdhttp")


def build_etcdclient() -> Path:
    return build_program(ETCD_CLIENT, "etcdclient")


def build_etcdctl(version: str = ETCDCTL_VERSION) -> Path:
    """etcdctl from its Go module (go.etcd.io/etcd/etcdctl/v3), in a scratch module
    because its own go.mod has replace directives `go install` refuses."""
    _need_go()
    out = CACHE / f"etcdctl-{version}" / "etcdctl"
    if out.exists():
        return out
    work = CACHE / "build" / f"etcdctl-{version}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text("module local/etcdctlbuild\n\ngo 1.25\n")
    env = go_env()
    module = "go.etcd.io/etcd/etcdctl/v3"
    subprocess.run(["go", "get", f"{module}@{version}"], cwd=work, env=env, check=True)
    tmp = out.with_suffix(".tmp")
    subprocess.run(["go", "build", "-o", str(tmp), module], cwd=work, env=env, check=True)
    tmp.rename(out)
    return out
