"""Every scenario case runs against an embedded kubepd over real gRPC and must meet its
success predicate within its time bound."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pdsim.cases import CASES, get
from pdsim.runner import run_case

pytestmark = pytest.mark.timeout(400)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_case_meets_its_predicate(name: str) -> None:
    result = await run_case(get(name))
    assert result.ok, result.json()
    if name not in {
        "region-merge",
        "region-split",
        "import-data",
        "hot-write",
    }:  # splits add peers too
        assert result.moves >= result.min_moves, result.json()


def test_simulate_command_prints_json_last() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pdcore.cli.main", "simulate", "--case", "balance-leader"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert last["case"] == "balance-leader" and last["ok"] is True
    assert {"sim_seconds", "operators", "moves", "min_moves"} <= set(last)


def test_unknown_case_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pdcore.cli.main", "simulate", "--case", "no-such-case"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown case" in proc.stderr
