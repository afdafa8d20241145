"""TSO latency at the pd-leader during a scheduling storm, with the scheduler role in the
pd-leader (the fallback) and in a process of its own (what the operator runs), on a real
API server with three sidecars and the simulator as TiKV.

The storm: three empty stores join a cluster of REGIONS regions, so every scheduler
and checker works at full rate while a separate process asks the pd-leader for one
timestamp at a time. Prints p50/p99/max TSO latency and the pd-leader's CPU in each
mode, and the ratio of the p99s."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from _common import cpu_seconds, pct, progress

from pdcore.adapters.kube.client import KubeClient
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from pdsim.cases import round_robin, zones
from tests.support.kubecluster import KubeCluster, binary
from tests.support.pdproc import free_port
from tests.support.sidecars import Pods, Sidecar, fleet_for, run_fleet, wait_leader

ROOT = Path(__file__).resolve().parent.parent
REGIONS = int(os.environ.get("BENCH_REGIONS", "1500"))
STORM_S = float(os.environ.get("BENCH_STORM_S", "40"))


def tso_probe(address: str, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """One timestamp at a time, ~200/s, from its own process; puts latencies (ms)."""

    async def run() -> list[float]:
        async with grpc.aio.insecure_channel(address) as ch:
            stub = pdpb_pb2_grpc.PDStub(ch)
            cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest())).header.cluster_id
            call = stub.Tso()
            lat: list[float] = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                await call.write(
                    pdpb_pb2.TsoRequest(header=pdpb_pb2.RequestHeader(cluster_id=cid), count=1)
                )
                await call.read()
                lat.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.005)
            call.cancel()
            return lat

    out.put(asyncio.run(run()))


def start_host(pods: Pods, work: Path) -> subprocess.Popen[bytes]:
    log = open(work / f"{pods.name}-host.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "pdcore.cli.main", "scheduler-host", "--namespace",
         pods.namespace, "--cluster", pods.name, "--identity", "operator-bench",
         "--kubeconfig", str(pods.cluster.kubeconfig), "--lease-duration", "2",
         "--renew-period", "0.3", "--log-format", "text"],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip


async def scheduler_holder(kube: KubeClient, pods: Pods) -> str:
    lease = await kube.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{pods.namespace}/leases/{pods.name}-scheduler"
    )
    return str(lease["spec"].get("holderIdentity") or "")


async def one_mode(
    cluster: KubeCluster, kube: KubeClient, mode: str, work: Path
) -> dict[str, float]:
    pods = Pods(cluster, "default", f"storm-{mode}", work)
    host: subprocess.Popen[bytes] | None = None
    try:
        for i in range(3):
            sc = Sidecar(
                f"{pods.name}-{i}", free_port(), free_port(), work / f"{pods.name}-{i}.log"
            )
            pods.sidecars.append(sc)
            pods.start(sc)
        fleet = await fleet_for(pods, kube)
        progress(f"{mode}: bootstrapping {REGIONS} regions on 3 stores")
        await fleet.bootstrap(zones(3), round_robin(REGIONS, 3), size_mib=16)
        await run_fleet(fleet, 3.0)
        leader = await wait_leader(kube, pods)
        if mode == "operator":
            host = start_host(pods, work)
            while await scheduler_holder(kube, pods) != "operator-bench":
                await run_fleet(fleet, 0.3)
        progress(f"{mode}: storm — 3 empty stores join; {STORM_S:.0f}s of TSO probing")
        for z in (4, 5, 6):
            await fleet.add_store({"zone": f"z{z}", "host": f"h{z}"})
        assert leader.proc is not None
        cpu0 = cpu_seconds(leader.proc.pid)
        spawn = mp.get_context("spawn")  # a clean process: no copy of this event loop
        q = spawn.Queue()
        probe = spawn.Process(target=tso_probe, args=(leader.address, STORM_S, q))
        probe.start()
        await run_fleet(fleet, STORM_S + 1.0)
        lat = await asyncio.to_thread(q.get, True, 60)
        probe.join(10)
        cpu = cpu_seconds(leader.proc.pid) - cpu0
        moved = sum(
            1 for r in fleet.regions.values() for p in r.peers if p.store_id > max(fleet.stores) - 3
        )
        await fleet.close()
        return {
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat),
            "n": float(len(lat)),
            "cpu": cpu / STORM_S * 100,
            "moved": float(moved),
        }
    finally:
        if host is not None and host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
        for sc in pods.sidecars:
            pods.kill9(sc)


async def run(cluster: KubeCluster) -> None:
    kube = KubeClient.from_kubeconfig(cluster.kubeconfig)
    work = Path(tempfile.mkdtemp(prefix="kubepd-bench-storm-"))
    try:
        results = {m: await one_mode(cluster, kube, m, work) for m in ("pd-leader", "operator")}
    finally:
        await kube.close()
    print(
        f"{'scheduler role in':<18} {'TSO p50 ms':>10} {'p99 ms':>8} {'max ms':>8} "
        f"{'samples':>8} {'leader CPU %':>13} {'peers on new stores':>20}"
    )
    for mode, r in results.items():
        print(
            f"{mode:<18} {r['p50']:>10.2f} {r['p99']:>8.2f} {r['max']:>8.1f} {r['n']:>8.0f} "
            f"{r['cpu']:>13.0f} {r['moved']:>20.0f}"
        )
    ratio = results["pd-leader"]["p99"] / results["operator"]["p99"]
    print(f"TSO p99 with the role in the pd-leader / in its own process: {ratio:.2f}x")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kubepd-bench-kube-"))
    cluster = KubeCluster(work).start()
    try:
        subprocess.run(
            [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "apply", "-f",
             str(ROOT / "deploy" / "crds")],
            check=True, capture_output=True,
        )  # fmt: skip
        asyncio.run(run(cluster))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
