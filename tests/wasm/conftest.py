from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "policies" / "build"


@pytest.fixture(scope="session")
def policies() -> Path:
    """The example and hostile policies, built from source (C with clang, WAT)."""
    subprocess.run(["bash", str(ROOT / "policies" / "build.sh")], check=True, capture_output=True)
    return BUILD
