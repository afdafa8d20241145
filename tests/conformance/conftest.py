"""Fixtures of the conformance tests: a real `kubepd serve` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pdproc import PdProcess


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[PdProcess]:
    proc = PdProcess(tmp_path / "data", name="pd-conf").start()
    try:
        yield proc
    finally:
        proc.stop()
