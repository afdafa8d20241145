"""Sidecars on a real API server: the pd-leader's CPU per 1,000 region heartbeats with 1,
2 and 4 sidecars (followers absorb unchanged heartbeats), the API server writes per
second in steady state, and failover time (kill -9 to the first new timestamp)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from _common import bootstrap_stores, cpu_seconds, progress

from pdcore.proto import metapb_pb2, pdpb_pb2, pdpb_pb2_grpc
from tests.support.kubecluster import KubeCluster, binary
from tests.support.pdproc import free_port

ROOT = Path(__file__).resolve().parent.parent
REGIONS = int(os.environ.get("BENCH_REGIONS", "20000"))
STORES = 10


def start_sidecar(
    cluster: KubeCluster, name: str, pod: str, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(work / f"{pod}.log", "ab")  # noqa: SIM115
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "sidecar",
            "--namespace",
            "default",
            "--cluster",
            name,
            "--pod-name",
            pod,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--client-urls",
            f"http://127.0.0.1:{port}",
            "--status-addr",
            f"127.0.0.1:{free_port()}",
            "--lease-duration",
            "2",
            "--renew-period",
            "0.3",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=ROOT,
    )
    return p, f"127.0.0.1:{port}"


def api_writes(cluster: KubeCluster) -> float:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    req = urllib.request.Request(
        cluster.server + "/metrics", headers={"Authorization": f"Bearer {cluster.token}"}
    )
    text = urllib.request.urlopen(req, context=ctx, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and re.search(r'verb="(POST|PUT|PATCH|DELETE)"', line)
            and 'group="kubepd.io"' in line
        ) or (
            line.startswith("apiserver_request_total{")
            and 'resource="leases"' in line
            and 'verb="PUT"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def holder(cluster: KubeCluster, name: str) -> str:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    url = f"{cluster.server}/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}-pd-leader"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.token}"})
    try:
        body = urllib.request.urlopen(req, context=ctx, timeout=5).read().decode()
    except OSError:
        return ""
    m = re.search(r'"holderIdentity":"([^"]*)"', body)
    return m.group(1) if m else ""


async def leader_of(cluster: KubeCluster, name: str, addresses: list[str]) -> tuple[int, int]:
    """The index of the sidecar holding the pd-leader Lease, once it answers AllocID."""
    while True:
        h = holder(cluster, name)
        for i, a in enumerate(addresses):
            if not h.endswith("@http://" + a):
                continue
            try:
                async with grpc.aio.insecure_channel(a) as ch:
                    stub = pdpb_pb2_grpc.PDStub(ch)
                    cid = (
                        await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=1)
                    ).header.cluster_id
                    r = await stub.AllocID(
                        pdpb_pb2.AllocIDRequest(header=pdpb_pb2.RequestHeader(cluster_id=cid)),
                        timeout=2,
                    )
                    if not r.header.HasField("error"):
                        return i, cid
            except Exception:
                pass
        await asyncio.sleep(0.05)


async def setup(addresses: list[str], cid: int) -> list[list[pdpb_pb2.RegionHeartbeatRequest]]:
    async with grpc.aio.insecure_channel(addresses[0]) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        h = pdpb_pb2.RequestHeader(cluster_id=cid)
        stores, first = await bootstrap_stores(stub, cid, STORES, REGIONS * 10)
    per_store: list[list[pdpb_pb2.RegionHeartbeatRequest]] = [[] for _ in stores]
    for i in range(REGIONS):
        rid = first + i * 4
        peers = [
            metapb_pb2.Peer(id=rid + 1 + j, store_id=stores[(i + j) % STORES]) for j in range(3)
        ]
        region = metapb_pb2.Region(
            id=rid,
            start_key=b"" if i == 0 else b"k%08d" % i,
            end_key=b"" if i == REGIONS - 1 else b"k%08d" % (i + 1),
            region_epoch=metapb_pb2.RegionEpoch(conf_ver=3, version=2),
            peers=peers,
        )
        per_store[i % STORES].append(
            pdpb_pb2.RegionHeartbeatRequest(
                header=h, region=region, leader=peers[0], approximate_size=96 << 20
            )
        )
    return per_store


def mine(
    per_store: list[list[pdpb_pb2.RegionHeartbeatRequest]], n: int, i: int
) -> list[pdpb_pb2.RegionHeartbeatRequest]:
    """The heartbeats of the stores whose pods run sidecar i."""
    return [r for s, reqs in enumerate(per_store) if s % n == i for r in reqs]


def pump(
    address: str, reqs: list[pdpb_pb2.RegionHeartbeatRequest], seconds: float, out: mp.Queue[int]
) -> None:
    async def run() -> int:
        async with grpc.aio.insecure_channel(address) as ch:
            call = pdpb_pb2_grpc.PDStub(ch).RegionHeartbeat()
            n, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                await call.write(reqs[n % len(reqs)])
                n += 1
            call.cancel()
            return n

    out.put(asyncio.run(run()))


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kubepd-bench-sc-"))
    cluster = KubeCluster(work / "kube").start()
    subprocess.run(
        [
            str(binary("kubectl")),
            f"--kubeconfig={cluster.kubeconfig}",
            "apply",
            "-f",
            str(ROOT / "deploy" / "crds"),
        ],
        check=True,
        capture_output=True,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(
            f"{'sidecars':>8} {'hb sent/s':>10} {'leader CPU ms / 1k hb':>22} {'API writes/s':>13}"
        )
        for n in (1, 2, 4):
            name = f"b{n}"
            started = [start_sidecar(cluster, name, f"{name}-{i}", work) for i in range(n)]
            procs += [p for p, _ in started]
            addresses = [a for _, a in started]
            li, cid = asyncio.run(leader_of(cluster, name, addresses))
            per_store = asyncio.run(setup([addresses[li]], cid))
            q: mp.Queue[int] = mp.Queue()
            progress(f"{n} sidecars: loading {REGIONS} regions")
            # Store s's TiKV talks to sidecar s % n; the first pass teaches everyone every region.
            loaders = [
                mp.Process(target=pump, args=(addresses[s % n], per_store[s], 4.0, q))
                for s in range(STORES)
            ]
            for p in loaders:
                p.start()
            for p in loaders:
                p.join()
            for _ in loaders:
                q.get()
            time.sleep(2)
            progress(f"{n} sidecars: steady state")
            leader_pid = started[li][0].pid
            w0, c0 = api_writes(cluster), cpu_seconds(leader_pid)
            t0 = time.monotonic()
            # One client per sidecar, carrying the heartbeats of every store in its pod(s):
            # the leader takes 1/n of the cluster's heartbeats directly, the rest via followers.
            clients = [
                mp.Process(target=pump, args=(addresses[i], mine(per_store, n, i), 8.0, q))
                for i in range(n)
            ]
            for p in clients:
                p.start()
            for p in clients:
                p.join()
            sent = sum(q.get() for _ in clients)
            dt = time.monotonic() - t0
            cpu = cpu_seconds(leader_pid) - c0
            writes = (api_writes(cluster) - w0) / dt
            print(f"{n:>8} {sent / dt:>10.0f} {cpu / max(1, sent) * 1e6:>22.1f} {writes:>13.2f}")
            for p, _ in started:
                os.killpg(p.pid, signal.SIGKILL)
        # Failover time: kill -9 the leader of 3 sidecars, measure until a follower serves TSO.
        name = "fo"
        started = [start_sidecar(cluster, name, f"{name}-{i}", work) for i in range(3)]
        procs += [p for p, _ in started]
        addresses = [a for _, a in started]
        times = []
        for _ in range(10):
            li, _cid = asyncio.run(leader_of(cluster, name, addresses))
            os.killpg(started[li][0].pid, signal.SIGKILL)
            t = time.monotonic()
            others = [a for i, a in enumerate(addresses) if i != li]
            asyncio.run(leader_of(cluster, name, others))
            times.append(time.monotonic() - t)
            started[li] = start_sidecar(cluster, name, f"{name}-{li}", work)
            procs.append(started[li][0])
            addresses[li] = started[li][1]
        print(
            "failover (kill -9 to a new leader answering), lease 2 s: "
            f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s over {len(times)}"
        )
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
