"""Build the Go conformance programs once, cached by the hash of their sources.

The Go module cache and build cache live under ~/.cache/kubepd/go so a warm run pays
nothing; each binary is keyed by its go.mod, go.sum and .go files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).parent / "goclient"
HTTP_CLIENT = Path(__file__).parent / "gohttp"
CACHE = Path.home() / ".cache" / "kubepd"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "go" / "mod"),
        GOCACHE=str(CACHE / "go" / "build"),
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod",
    )
    return env


def build_pdclient() -> Path:
    """The driver of PD's gRPC client (github.com/tikv/pd/client)."""
    return build_go(HERE, "pdclient")


def build_pdhttp() -> Path:
    """The driver of PD's Go HTTP client (github.com/tikv/pd/client/http)."""
    return build_go(HTTP_CLIENT, "pdhttp")


def build_go(src: Path, name: str) -> Path:
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed for the conformance tests: install Go")
    digest = hashlib.sha256()
    for f in sorted(src.iterdir()):
        if f.suffix in {".go", ".mod", ".sum"}:
            digest.update(f.name.encode() + f.read_bytes())
    out = CACHE / "conformance" / digest.hexdigest()[:16] / name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(out), "."], cwd=src, env=go_env(), check=True)
    return out
