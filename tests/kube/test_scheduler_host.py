"""The scheduler role outside the pd-leader: `kubepd scheduler-host` (what the operator
runs for each TiKVCluster) takes the role over from the pd-leader, balances the
simulator's cluster through the sidecars, and when it is killed the pd-leader takes
scheduling back within seconds; started again, it takes the role back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import KubeClient, crd_path
from pdcore.adapters.kube.lease import LeaseRecord
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.support.ports import free_port
from tests.support.sidecars import Pods, create_tikv_cluster, run_fleet, wait_leader

pytestmark = pytest.mark.timeout(300)


def start_host(
    pods: Pods, identity: str, log: Path, status_port: int, *extra: str
) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "scheduler-host",
            "--namespace",
            pods.namespace,
            "--cluster",
            pods.name,
            "--identity",
            identity,
            "--kubeconfig",
            str(pods.cluster.kubeconfig),
            "--lease-duration",
            "2",
            "--renew-period",
            "0.3",
            "--status-interval",
            "1",
            "--status-addr",
            f"127.0.0.1:{status_port}",
            "--log-format",
            "text",
            *extra,
        ],
        stdout=out,
        stderr=out,
        start_new_session=True,
    )


async def scheduler_holder(kube: KubeClient, pods: Pods) -> str:
    try:
        lease = await kube.get(kinds.LEASES.path(pods.namespace, f"{pods.name}-scheduler"))
    except Exception:
        return ""
    return LeaseRecord.of(lease).holder


async def wait_holder(kube: KubeClient, pods: Pods, fleet: Fleet, prefix: str) -> float:
    """Run the fleet until the scheduler role is held by `prefix`...; returns seconds."""
    t0 = time.monotonic()
    while not (await scheduler_holder(kube, pods)).startswith(prefix):
        assert time.monotonic() - t0 < 20, f"the scheduler role never went to {prefix}"
        await run_fleet(fleet, 0.2)
    return time.monotonic() - t0


async def fill(fleet: Fleet, store: int, peers: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while sum(1 for r in fleet.regions.values() if r.peer_on(store)) < peers:
        got = sum(1 for r in fleet.regions.values() if r.peer_on(store))
        assert time.monotonic() < deadline, f"store {store} got only {got} peers"
        await run_fleet(fleet, 1.0)


def why(port: int) -> object:
    base = f"http://127.0.0.1:{port}"
    out = []
    for path in ("/health", "/pd/api/v1/schedulers/diagnostic/balance-region-scheduler"):
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            out.append(json.loads(resp.read()))
    return out


def operators_created_by(status_port: int) -> int:
    url = f"http://127.0.0.1:{status_port}/pd/api/v1/operators?history=true&limit=10000"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return len(json.loads(resp.read()))


async def test_the_scheduler_role_moves_out_of_the_pd_leader_and_back(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, tmp_path: Path
) -> None:
    fleet = fleet_on
    await create_tikv_cluster(kube, pods.namespace, pods.name)
    await fleet.bootstrap(zones(3), round_robin(60, 3), size_mib=16)
    await run_fleet(fleet, 1.0)
    leader = await wait_leader(kube, pods)
    assert (await scheduler_holder(kube, pods)).startswith(leader.pod + "@")
    port = free_port()
    host = start_host(pods, "operator-a", tmp_path / "host-a.log", port)
    try:
        await wait_holder(kube, pods, fleet, "operator-a")
        before = operators_created_by(leader.status_port)
        z4 = await fleet.add_store({"zone": "z4", "host": "h4"})
        try:
            await fill(fleet, z4, 30, 90)
        except AssertionError as e:
            raise AssertionError(f"{e}; host: {why(port)}") from None
        # The host balanced the cluster; the pd-leader created nothing meanwhile.
        assert await scheduler_holder(kube, pods) == "operator-a"
        assert operators_created_by(leader.status_port) == before
        assert all(len(r.peers) >= 3 for r in fleet.regions.values())
        # Its summary reaches the TiKVCluster status (rate-bounded).
        deadline = time.monotonic() + 10
        while True:
            obj = await kube.get(f"{crd_path(pods.namespace, 'tikvclusters')}/{pods.name}")
            summary = obj.get("status", {}).get("scheduling", {})
            if summary.get("holder") == "operator-a" and summary.get("operatorsFinished", 0) >= 30:
                break
            assert time.monotonic() < deadline, summary
            await run_fleet(fleet, 0.5)
        assert summary["summary"]

        # Kill it: the pd-leader takes scheduling over, and nothing stalls.
        os.killpg(host.pid, signal.SIGKILL)
        host.wait()
        took = await wait_holder(kube, pods, fleet, leader.pod + "@")
        assert took < 5.0, f"the pd-leader took {took:.1f}s to take scheduling over"
        z5 = await fleet.add_store({"zone": "z5", "host": "h5"})
        await fill(fleet, z5, 20, 90)
        assert operators_created_by(leader.status_port) > before

        # Back again: the role returns to the operator's host.
        host = start_host(pods, "operator-b", tmp_path / "host-b.log", port)
        await wait_holder(kube, pods, fleet, "operator-b")
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
