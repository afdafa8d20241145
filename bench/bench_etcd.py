"""The etcd v3 API of a `kubepd serve` process (embedded SQLite store): Put and Range
latency (p50/p99, 1 and 8 concurrent clients) and Watch throughput (events/s one
prefix watcher receives while 8 writers put, one key per Put or 100 per Txn). The
client runs in this process; every write is durable before it is answered.

    bench/bench_etcd.py [embedded] [sidecar]   (default: embedded)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from _common import cpu_seconds, now, pct, progress, start_server

from pdcore.proto import etcdserverpb_pb2 as pb
from pdcore.proto import etcdserverpb_pb2_grpc as rpc

DURATION_S = 3.0
WATCH_DURATION_S = 4.0
VALUE = b"v" * 100


async def put_loop(kv: rpc.KVStub, worker: int, until: float, lat: list[float]) -> int:
    n = 0
    while now() < until:
        t = now()
        await kv.Put(pb.PutRequest(key=b"/bench/%d/%d" % (worker, n % 1000), value=VALUE))
        lat.append(now() - t)
        n += 1
    return n


async def range_loop(kv: rpc.KVStub, worker: int, until: float, lat: list[float]) -> int:
    n = 0
    while now() < until:
        t = now()
        await kv.Range(pb.RangeRequest(key=b"/bench/%d/%d" % (worker % 8, n % 100)))
        lat.append(now() - t)
        n += 1
    return n


async def latency(address: str, op: str, clients: int) -> tuple[float, float, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        kv = rpc.KVStub(ch)
        loop = put_loop if op == "put" else range_loop
        lat: list[float] = []
        start = now()
        counts = await asyncio.gather(
            *(loop(kv, w, start + DURATION_S, lat) for w in range(clients))
        )
        elapsed = now() - start
    return sum(counts) / elapsed, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3


async def watch_rate(address: str, writers: int, per_txn: int) -> tuple[float, float]:
    """Events/s one prefix watcher receives, and puts/s written, while `writers` put
    (`per_txn` > 1: txns of that many puts, so the watch path is the bottleneck)."""
    async with grpc.aio.insecure_channel(address) as ch:
        kv, watch = rpc.KVStub(ch), rpc.WatchStub(ch)
        call = watch.Watch()
        await call.write(
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/w/", range_end=b"/w0"))
        )
        created = await call.read()
        assert created.created
        start = now()
        until = start + WATCH_DURATION_S
        received = 0

        async def reader() -> None:
            nonlocal received
            while True:
                resp = await call.read()
                received += len(resp.events)

        async def writer(w: int) -> int:
            n = 0
            while now() < until:
                if per_txn == 1:
                    await kv.Put(pb.PutRequest(key=b"/w/%d/%d" % (w, n % 100), value=VALUE))
                else:
                    ops = [
                        pb.RequestOp(
                            request_put=pb.PutRequest(key=b"/w/%d/%d" % (w, i), value=VALUE)
                        )
                        for i in range(per_txn)
                    ]
                    await kv.Txn(pb.TxnRequest(success=ops))
                n += per_txn
            return n

        task = asyncio.create_task(reader())
        puts = sum(await asyncio.gather(*(writer(w) for w in range(writers))))
        await asyncio.sleep(0.5)  # let the last events arrive before counting
        task.cancel()
        call.cancel()
        elapsed = until - start
    return received / elapsed, puts / elapsed


async def serves_etcd(address: str, timeout: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(address) as ch:
        kv = rpc.KVStub(ch)
        deadline = now() + timeout
        while True:
            try:
                await kv.Range(pb.RangeRequest(key=b"/probe"), timeout=2)
                return
            except grpc.aio.AioRpcError:
                if now() > deadline:
                    raise
                await asyncio.sleep(0.1)


def measure(address: str, pid: int) -> None:
    """Every number, against the member at `address` (`pid`: whose CPU is counted)."""
    print(f"{'op':>6} {'clients':>8} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s':>6}")
    for op in ("put", "range"):
        for clients in (1, 8):
            progress(f"{op} with {clients} clients for {DURATION_S:.0f} s")
            cpu0 = cpu_seconds(pid)
            rate, p50, p99 = asyncio.run(latency(address, op, clients))
            cpu = cpu_seconds(pid) - cpu0
            print(f"{op:>6} {clients:>8} {rate:>8.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>6.2f}")
    for per_txn in (1, 100):
        progress(f"watch while 8 writers put ({per_txn} per request)")
        events, puts = asyncio.run(watch_rate(address, 8, per_txn))
        print(
            f"watch, {per_txn:>3} puts/request: {events:>7.0f} events/s received"
            f" ({puts:.0f} puts/s written)"
        )


def embedded() -> None:
    pd = start_server("bench-etcd")
    try:
        print("== embedded (kubepd serve, SQLite)")
        measure(pd.address, pd.proc.pid)  # type: ignore[union-attr]
    finally:
        pd.stop()


def sidecars() -> None:
    """Two sidecars on a real API server: the pd-leader itself, then a follower that
    relays every call to it (the data in ConfigMaps)."""
    from bench_sidecars import ROOT, leader_of, start_sidecar

    from tests.support.kubecluster import KubeCluster, binary

    work = Path(tempfile.mkdtemp(prefix="kubepd-bench-etcd-"))
    progress("starting kube-apiserver and etcd")
    cluster = KubeCluster(work / "kube").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kubectl = [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}"]
        subprocess.run(
            [*kubectl, "apply", "-f", str(ROOT / "deploy" / "crds")],
            check=True,
            capture_output=True,
        )
        started = [start_sidecar(cluster, "e", f"e-{i}", work) for i in range(2)]
        procs = [p for p, _ in started]
        addresses = [a for _, a in started]
        li, _ = asyncio.run(leader_of(cluster, "e", addresses))
        for a in addresses:
            asyncio.run(serves_etcd(a))
        print("== sidecar: the pd-leader (ConfigMaps on the API server)")
        measure(addresses[li], procs[li].pid)
        print("== sidecar: a follower relaying to the pd-leader (leader CPU counted)")
        measure(addresses[1 - li], procs[li].pid)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        cluster.stop()


def main() -> int:
    # SIGTERM (e.g. `timeout`) unwinds through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = sys.argv[1:] or ["embedded"]
    if "embedded" in modes:
        embedded()
    if "sidecar" in modes:
        sidecars()
    return 0


if __name__ == "__main__":
    sys.exit(main())
