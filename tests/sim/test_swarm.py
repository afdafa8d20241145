"""The fault swarm: seeds under random fault schedules stay safe and become live again,
failing seeds found so far stay fixed, and the safety checks do catch violations."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pdsim.cases import get
from pdsim.runner import simulate
from pdsim.safety import SafetyChecker
from pdsim.swarm import FaultSchedule, run_seed
from pdsim.world import World

pytestmark = pytest.mark.timeout(600)

# Seeds the swarm once failed on, with why; each must now pass.
REGRESSIONS = [
    # PD balanced leaders within its own tolerance (102/102/102/94, 103/103/103/91: no
    # source above a target by more than 2 x (5 + 1)); the predicate asked for 5 % of the
    # mean.
    (1, "balance-leader"),
    (19, "balance-leader"),
    # A replace-down-peer operator was lost after its learner caught up on the only free
    # store; the rule checker found no target and never promoted that orphan learner.
    (9, "makeup-down-replicas"),
    # The same with the offline store holding the leader: a replace timed out on its
    # leader transfer (the target store was down), twice, and left two orphan learners.
    (14, "delete-nodes"),
    # A region split off while heartbeats were dropped went unheard for 181 s: the
    # fleet's periodic heartbeats went round a list by position, and merges shifted it.
    (214, "merge-while-balancing"),
]


@pytest.mark.parametrize(("seed", "case"), REGRESSIONS)
def test_seeds_that_failed_once_pass(seed: int, case: str) -> None:
    res = run_seed(seed, case)
    assert res.ok, json.dumps(res.summary())


def test_a_bounded_swarm_passes_and_reports_each_seed() -> None:
    """What CI runs: a few seeds across the swarm's cases, from the command line."""
    proc = subprocess.run(
        [sys.executable, "-m", "pdcore.cli.main", "simulate", "--swarm", "4", "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=540,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert summary["seeds"] == 4 and summary["failed"] == []
    assert "4/4" in proc.stderr  # the progress bar reached the end


def test_a_fault_schedule_is_drawn_from_its_seed_alone() -> None:
    assert FaultSchedule.draw(5).describe() == FaultSchedule.draw(5).describe()
    assert FaultSchedule.draw(5).describe() != FaultSchedule.draw(6).describe()
    assert all(w.end_s <= 600 for w in FaultSchedule.draw(11).windows)


def test_the_id_and_tso_checks_catch_violations() -> None:
    checker = SafetyChecker()
    checker.claim(1.0, 77, "peer of region 5 on store 2")
    checker.claim(2.0, 77, "peer of region 5 on store 2")  # re-sent: the same thing
    assert not checker.violations
    checker.claim(3.0, 77, "region split from 9")
    assert [v.kind for v in checker.violations] == ["id reused"]


class _KillAll:
    """An observer that takes every store of one region down: its last voter is lost."""

    def __init__(self) -> None:
        self.checker = SafetyChecker()
        self.done = False

    async def tick(self, world: World, t: float) -> None:
        fleet = world.fleet
        assert fleet is not None
        if t >= 30 and not self.done:
            self.done = True
            await self.checker.check_tso(t, fleet)
            self.checker.last_ts = (1 << 62, 0)  # "seen" a timestamp from the far future
            await self.checker.check_tso(t, fleet)
            region = next(iter(fleet.regions.values()))
            for p in region.peers:
                fleet.stop_store(p.store_id)
        self.checker.check_fleet(t, fleet)
        self.checker.check_pd_regions(t, fleet, world.node())

    def quiet_after(self) -> float:
        return 0.0


def test_the_fleet_checks_catch_a_region_without_live_voters() -> None:
    obs = _KillAll()
    case = get("balance-leader")
    case.bound_s = 60
    simulate(case, observer=obs)
    kinds = {v.kind for v in obs.checker.violations}
    assert {"no live voter", "TSO regression"} <= kinds, obs.checker.violations
