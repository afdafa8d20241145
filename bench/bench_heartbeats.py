"""Region heartbeat ingestion by one `kubepd serve` process (schedulers on): heartbeats
per second and server CPU per 1,000 heartbeats for unchanged regions, measured from
the server's own counters and /proc. The load comes from separate client processes so
the server has its core to itself. Runs with gRPC alone on the client port and with the
port shared with the HTTP API (the default), alternately, ROUNDS times, a fresh server
each time; prints the medians."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import re
import ssl
import statistics
import sys
import urllib.request
from collections.abc import Callable

import grpc
from _common import (
    PORT_MODES,
    bootstrap_stores,
    cpu_seconds,
    now,
    progress,
    rss_bytes,
    start_server,
)

from pdcore.proto import metapb_pb2, pdpb_pb2, pdpb_pb2_grpc
from tests.support.pdproc import PdProcess

REGIONS = 20_000
STORES = 4
CLIENTS = 2
DURATION_S = 6.0
ROUNDS = 3


def processed(status: str, context: ssl.SSLContext | None = None) -> int:
    text = urllib.request.urlopen(status + "/metrics", timeout=5, context=context).read().decode()
    m = re.search(
        r'pd_scheduler_region_heartbeat_total\{status="ok",type="report"\} ([0-9.e+]+)', text
    )
    return int(float(m.group(1))) if m else 0


def requests(
    cid: int, store_ids: list[int], first_region: int
) -> list[list[pdpb_pb2.RegionHeartbeatRequest]]:
    per_store: list[list[pdpb_pb2.RegionHeartbeatRequest]] = [[] for _ in store_ids]
    h = pdpb_pb2.RequestHeader(cluster_id=cid)
    for i in range(REGIONS):
        rid = first_region + i
        peers = [
            metapb_pb2.Peer(id=rid * 10 + j, store_id=store_ids[(i + j) % len(store_ids)])
            for j in range(3)
        ]
        region = metapb_pb2.Region(
            id=rid,
            start_key=b"" if i == 0 else b"k%08d" % i,
            end_key=b"" if i == REGIONS - 1 else b"k%08d" % (i + 1),
            region_epoch=metapb_pb2.RegionEpoch(conf_ver=3, version=2),
            peers=peers,
        )
        per_store[i % len(store_ids)].append(
            pdpb_pb2.RegionHeartbeatRequest(
                header=h,
                region=region,
                leader=peers[0],
                approximate_size=96 << 20,
                approximate_keys=960_000,
                interval=pdpb_pb2.TimeInterval(start_timestamp=0, end_timestamp=60),
            )
        )
    return per_store


async def pump(
    address: str,
    batches: list[list[pdpb_pb2.RegionHeartbeatRequest]],
    until: float,
    channel: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
) -> int:
    async with channel(address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        sent = 0

        async def one(reqs: list[pdpb_pb2.RegionHeartbeatRequest]) -> None:
            nonlocal sent
            call = stub.RegionHeartbeat()
            i = 0
            while now() < until:
                await call.write(reqs[i % len(reqs)])
                i += 1
            sent += i
            await call.done_writing()
            call.cancel()

        await asyncio.gather(*(one(b) for b in batches))
        return sent


def client(
    address: str,
    cid: int,
    store_ids: list[int],
    first_region: int,
    k: int,
    until_offset: float,
    out: mp.Queue[int],
) -> None:
    per_store = requests(cid, store_ids, first_region)
    mine = [b for i, b in enumerate(per_store) if i % CLIENTS == k]
    out.put(asyncio.run(pump(address, mine, now() + until_offset)))


async def setup(address: str) -> tuple[int, list[int], int]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest())).header.cluster_id
        stores, first = await bootstrap_stores(stub, cid, STORES, REGIONS * 40)
        return cid, stores, first


def main() -> int:
    got: dict[str, list[tuple[float, float]]] = {mode: [] for mode in PORT_MODES}
    for rnd in range(ROUNDS):
        for mode, extra in PORT_MODES.items():
            print(f"client port: {mode} (round {rnd + 1})")
            got[mode].append(measure(start_server(f"bench-hb-{mode}", extra)))
    print(f"medians of {ROUNDS} rounds:")
    for mode, rows in got.items():
        rate, per_k = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"{mode:>10}: {rate:,.0f} heartbeats/s, {per_k * 1000:.1f} ms CPU per 1,000")
    return 0


def measure(pd: PdProcess) -> tuple[float, float]:
    """Heartbeats per second and server CPU seconds per 1,000 heartbeats."""
    pid = pd.proc.pid  # type: ignore[union-attr]
    try:
        cid, stores, first = asyncio.run(setup(pd.address))
        progress(f"loading {REGIONS} regions")
        q: mp.Queue[int] = mp.Queue()
        warm = [
            mp.Process(target=client, args=(pd.address, cid, stores, first, k, 3.0, q))
            for k in range(CLIENTS)
        ]
        for p in warm:
            p.start()
        for p in warm:
            p.join()
        for _ in warm:
            q.get()
        progress(f"{REGIONS} regions loaded; measuring unchanged heartbeats for {DURATION_S:.0f} s")
        procs = [
            mp.Process(target=client, args=(pd.address, cid, stores, first, k, DURATION_S + 4.0, q))
            for k in range(CLIENTS)
        ]
        for p in procs:
            p.start()
        import time

        time.sleep(3.0)  # the clients build their requests first
        n0, c0, t0 = processed(pd.status), cpu_seconds(pid), now()
        time.sleep(DURATION_S)
        n1, c1, t1 = processed(pd.status), cpu_seconds(pid), now()
        for p in procs:
            p.join()
        rate = (n1 - n0) / (t1 - t0)
        per_k = (c1 - c0) / max(1, n1 - n0) * 1000
        print(f"regions: {REGIONS}, stores: {STORES}, client processes: {CLIENTS}")
        print(f"heartbeats/s ingested: {rate:.0f}")
        print(f"server CPU per 1,000 heartbeats: {per_k * 1000:.1f} ms")
        print(f"server CPU utilisation: {(c1 - c0) / (t1 - t0) * 100:.0f} %")
        print(f"server RSS: {rss_bytes(pid) / 2**20:.1f} MiB")
        return rate, per_k
    finally:
        pd.stop()


if __name__ == "__main__":
    sys.exit(main())
