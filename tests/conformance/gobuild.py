"""Build the Go conformance client once, cached by the hash of its sources.

The Go module cache and build cache live under ~/.cache/kubepd/go so a warm run pays
nothing; the binary is keyed by go.mod, go.sum and the .go files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).parent / "goclient"
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
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed for the conformance tests: install Go")
    digest = hashlib.sha256()
    for f in sorted(HERE.iterdir()):
        if f.suffix in {".go", ".mod", ".sum"}:
            digest.update(f.name.encode() + f.read_bytes())
    out = CACHE / "conformance" / digest.hexdigest()[:16] / "pdclient"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(out), "."], cwd=HERE, env=go_env(), check=True)
    return out
