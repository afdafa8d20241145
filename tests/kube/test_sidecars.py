"""PD as sidecars against the real API server: three `kubepd sidecar` processes, the
simulator as TiKV spread over them, and the official Go PD client pointed at a follower.
Bootstrap, heartbeats, region lookups, TSO, scheduling through the sidecars, and
failover under TSO load."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pdcore.adapters.clock import ScaledClock
from pdcore.adapters.kube.client import KubeClient
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.conformance.gobuild import build_pdclient
from tests.support.kubecluster import KubeCluster
from tests.support.pdproc import free_port

pytestmark = pytest.mark.timeout(300)
_names = itertools.count(1)


@dataclass
class Sidecar:
    pod: str
    port: int
    status_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Pods:
    cluster: KubeCluster
    namespace: str
    name: str
    workdir: Path
    sidecars: list[Sidecar] = field(default_factory=list)

    def start(self, sc: Sidecar) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "sidecar",
            "--namespace",
            self.namespace,
            "--cluster",
            self.name,
            "--pod-name",
            sc.pod,
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--client-urls",
            f"http://{sc.address}",
            "--status-addr",
            f"127.0.0.1:{sc.status_port}",
            "--lease-duration",
            "2",
            "--renew-period",
            "0.3",
            "--log-format",
            "text",
        ]
        log = open(sc.log, "ab")  # noqa: SIM115
        sc.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)

    def kill9(self, sc: Sidecar) -> None:
        if sc.proc is not None and sc.proc.poll() is None:
            os.killpg(sc.proc.pid, signal.SIGKILL)
            sc.proc.wait()


async def holder(kube: KubeClient, ns: str, name: str) -> str:
    try:
        lease = await kube.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}-pd-leader"
        )
    except Exception:
        return ""
    return str(lease.get("spec", {}).get("holderIdentity") or "")


@pytest.fixture
def pods(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Pods]:
    p = Pods(kube_cluster, namespace, f"c{next(_names)}", tmp_path)
    for i in range(3):
        sc = Sidecar(f"tikv-{i}", free_port(), free_port(), tmp_path / f"tikv-{i}.log")
        p.sidecars.append(sc)
        p.start(sc)
    try:
        yield p
    finally:
        for sc in p.sidecars:
            p.kill9(sc)


async def wait_leader(kube: KubeClient, pods: Pods, timeout: float = 20.0) -> Sidecar:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = await holder(kube, pods.namespace, pods.name)
        for sc in pods.sidecars:
            alive = sc.proc is not None and sc.proc.poll() is None
            if h.startswith(sc.pod + "@") and alive and await serves_tso(sc):
                return sc
        await asyncio.sleep(0.2)
    raise AssertionError(
        "no pd-leader within the timeout; logs: " + " ".join(str(s.log) for s in pods.sidecars)
    )


async def answers(sc: Sidecar) -> bool:
    import grpc

    try:
        async with grpc.aio.insecure_channel(sc.address) as ch:
            await pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest(), timeout=1)
            return True
    except Exception:
        return False


async def serves_tso(sc: Sidecar) -> bool:
    import grpc

    try:
        async with grpc.aio.insecure_channel(sc.address) as ch:
            stub = pdpb_pb2_grpc.PDStub(ch)
            cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=2)).header.cluster_id
            call = stub.Tso()
            await call.write(
                pdpb_pb2.TsoRequest(header=pdpb_pb2.RequestHeader(cluster_id=cid), count=1)
            )
            await asyncio.wait_for(call.read(), 2)
            call.cancel()
            return True
    except Exception:
        return False


@pytest.fixture
async def fleet_on(pods: Pods, kube: KubeClient) -> AsyncIterator[Fleet]:
    leader = await wait_leader(kube, pods)
    for sc in pods.sidecars:  # every pod's PD answers before its TiKV starts
        deadline = time.monotonic() + 20
        while not await answers(sc):
            assert time.monotonic() < deadline, f"{sc.pod} never answered"
            await asyncio.sleep(0.2)
    clock = ScaledClock(20.0)
    fleet = Fleet(
        leader.address,
        f"127.0.0.1:{leader.status_port}",
        clock,
        store_addresses=[sc.address for sc in pods.sidecars],
    )
    yield fleet
    await fleet.close()


async def run_fleet(fleet: Fleet, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await fleet.step()
        await asyncio.sleep(0.02)


def go(*args: str, timeout: float = 60) -> dict[str, object]:
    out = subprocess.run(
        [str(build_pdclient()), *args], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])  # type: ignore[no-any-return]


async def test_fleet_and_go_client_through_followers(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(60, 3), size_mib=32)
    await run_fleet(fleet, 4.0)
    leader = await wait_leader(kube, pods)
    follower = next(sc for sc in pods.sidecars if sc is not leader)
    members = go("-pd", follower.address, "members")
    assert members["leader_url"] == f"http://{follower.address}"  # TiKV stays local
    tso = go("-pd", follower.address, "-n", "3000", "-workers", "8", "tso")
    assert tso["unique"] == 3000
    first = min(fleet.regions.values(), key=lambda r: r.start)
    regions = go("-pd", follower.address, "-keys", "t00000001", "-id", str(first.id), "regions")
    assert regions["by_id"]["id"] == first.id  # type: ignore[index]
    assert len(regions["scan"]) == 60  # type: ignore[arg-type]


async def test_scheduling_reaches_tikv_through_the_sidecars(
    pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    # Four stores, all regions on the first three: the new one must fill up through
    # steps the leader sends via the sidecar that owns each region leader's stream.
    await fleet.bootstrap(zones(3), round_robin(90, 3), size_mib=16)
    await fleet.add_store({"zone": "z4", "host": "h4"})
    deadline = time.monotonic() + 90
    newest = max(fleet.stores)
    while time.monotonic() < deadline:
        await run_fleet(fleet, 1.0)
        if sum(1 for r in fleet.regions.values() if r.peer_on(newest)) >= 55:
            break
    on_new = sum(1 for r in fleet.regions.values() if r.peer_on(newest))
    assert on_new >= 55, f"only {on_new} peers reached the new store"
    # Nothing lost on the way: moves add before they remove.
    assert all(len(r.peers) >= 3 for r in fleet.regions.values())


async def test_failover_under_tso_load(pods: Pods, kube: KubeClient, tmp_path: Path) -> None:
    """kill -9 the pd-leader five times under TSO load from the Go client on a follower:
    a new leader serves within 3 s, timestamps never go back, ids are never reused."""
    leader = await wait_leader(kube, pods)
    client_side = next(sc for sc in pods.sidecars if sc is not leader)
    seen_ids: list[int] = []

    async def alloc(sc: Sidecar) -> None:
        import grpc

        for _ in range(30):
            try:
                async with grpc.aio.insecure_channel(sc.address) as ch:
                    stub = pdpb_pb2_grpc.PDStub(ch)
                    cid = (
                        await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=2)
                    ).header.cluster_id
                    resp = await stub.AllocID(
                        pdpb_pb2.AllocIDRequest(
                            header=pdpb_pb2.RequestHeader(cluster_id=cid), count=5
                        ),
                        timeout=3,
                    )
                    seen_ids.extend(range(resp.id - 4, resp.id + 1))
                    return
            except Exception:
                await asyncio.sleep(0.2)
        raise AssertionError("AllocID never succeeded")

    failovers: list[float] = []
    for _ in range(5):
        leader = await wait_leader(kube, pods)
        client_side = next(
            sc for sc in pods.sidecars if sc is not leader and sc.proc and sc.proc.poll() is None
        )
        await alloc(client_side)
        out = tmp_path / f"tso-{len(failovers)}.txt"
        load = subprocess.Popen(
            [
                str(build_pdclient()),
                "-pd",
                client_side.address,
                "-duration",
                "7s",
                "-workers",
                "4",
                "-out",
                str(out),
                "tso-load",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        await asyncio.sleep(2.0)
        killed = time.time_ns()
        pods.kill9(leader)
        new = await wait_leader(kube, pods, timeout=10)
        failovers.append((time.time_ns() - killed) / 1e9)
        # The server side: a new leader answers TSO within 3 s of the kill (2 s lease).
        assert failovers[-1] < 3.0, f"no leader serving TSO {failovers[-1]:.1f}s after the kill"
        load.communicate(timeout=60)
        rows = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
        before = [ts for ts, at in rows if at < killed]
        after = [ts for ts, at in rows if at > killed]
        assert before and after
        assert min(after) > max(before)
        assert len({ts for ts, _ in rows}) == len(rows)
        # The Go client adds its own reconnect backoff on top of the failover.
        gap = (min(at for ts, at in rows if at > killed) - killed) / 1e9
        assert gap < 8.0, f"the Go client's first timestamp came {gap:.1f}s after the kill"
        await alloc(new)
        pods.start(leader)  # the killed pod comes back as a follower
    assert len(set(seen_ids)) == len(seen_ids), "an id was reused"
    print("failover seconds:", [round(f, 2) for f in failovers])
