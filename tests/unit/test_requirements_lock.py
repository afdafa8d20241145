"""requirements.lock is what the image installs (`pip install -c` with only its wheels at
hand): every runtime dependency of kubepd[kube,wasm] must be in it, at the pinned version,
or the image build fails ("no matching distribution")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not a pin: {line!r}"
            out[canonical(name)] = version.strip()
    return out


def test_lock_pins_every_runtime_dependency_at_its_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = pins(
        [
            *project["dependencies"],
            *project["optional-dependencies"]["kube"],
            *project["optional-dependencies"]["wasm"],
        ]
    )
    locked = pins((ROOT / "requirements.lock").read_text().splitlines())
    assert {n: locked.get(n) for n in wanted} == wanted
