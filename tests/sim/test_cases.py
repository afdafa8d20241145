"""Every scenario case meets its success predicate within its bound in simulated time,
and a seed gives the same result every time: PD and the fleet run on virtual time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pdsim.cases import CASES, get
from pdsim.runner import simulate
from tests.support.cpu import cpu_hogs

pytestmark = pytest.mark.timeout(400)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_meets_its_predicate(name: str) -> None:
    result = simulate(get(name))
    assert result.ok, result.json()
    if name not in {
        "region-merge",
        "region-split",
        "import-data",
        "hot-write",
    }:  # splits add peers too
        assert result.moves >= result.min_moves, result.json()


def _simulate_cli(*args: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "pdcore.cli.main", "simulate", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_seed_repeats_exactly_idle_and_beside_cpu_hogs() -> None:
    """The JSON summary of a case is the same on every run of a seed, also while three
    CPU-bound processes compete for the machine's two cores; another seed differs."""
    code, idle = _simulate_cli("--case", "add-nodes", "--seed", "7")
    assert code == 0 and idle["ok"] is True, idle
    with cpu_hogs(3, 240):
        code_busy, busy = _simulate_cli("--case", "add-nodes", "--seed", "7")
    assert code_busy == 0 and busy == idle
    _, other = _simulate_cli("--case", "add-nodes", "--seed", "8")
    assert (other["operators"], other["moves"], other["sim_seconds"]) != (
        idle["operators"],
        idle["moves"],
        idle["sim_seconds"],
    )


def test_grpc_transport_meets_the_predicate_in_lockstep() -> None:
    """Real gRPC over loopback: the virtual clock is held while messages are in flight,
    so the case converges in simulated time as the in-process run does, even beside CPU
    hogs."""
    with cpu_hogs(2, 240):
        result = simulate(get("balance-leader"), seed=3, transport="grpc")
    assert result.ok, result.json()
    inproc = simulate(get("balance-leader"), seed=3)
    # Message order between streams may differ over real sockets; the outcome may not.
    assert abs(result.sim_seconds - inproc.sim_seconds) <= 0.5 * inproc.sim_seconds + 30


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
    assert {"sim_seconds", "operators", "moves", "min_moves", "seed"} <= set(last)


def test_unknown_case_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pdcore.cli.main", "simulate", "--case", "no-such-case"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown case" in proc.stderr


@pytest.mark.timeout(900)
def test_demo_balances_beside_three_cpu_hogs() -> None:
    """`make demo`'s outcome does not depend on the machine: it balances and exits 0
    while three busy processes compete for two cores (unpaced, smaller, to stay quick)."""
    with cpu_hogs(3, 600):
        proc = subprocess.run(
            [sys.executable, "-m", "pdcore.cli.main", "demo", "--speed", "0", "--regions", "600"],
            capture_output=True,
            text=True,
            timeout=800,  # a slow machine takes longer; the result is the same
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "simulated" in next(ln for ln in proc.stdout.splitlines() if "balanced after" in ln)
