"""TSO throughput and latency against a `kubepd serve` process, with 1, 8 and 64
concurrent Tso streams (each sends count=1 requests back to back, as a client without
batching would). The client runs in this process; the server in its own."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import grpc
from _common import cpu_seconds, now, pct, progress, rss_bytes, start_server

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc

DURATION_S = 3.0


async def stream(stub: pdpb_pb2_grpc.PDStub, cid: int, until: float, lat: list[float]) -> int:
    call = stub.Tso()
    n = 0
    req = pdpb_pb2.TsoRequest(header=pdpb_pb2.RequestHeader(cluster_id=cid), count=1)
    while now() < until:
        t = now()
        await call.write(req)
        await call.read()
        lat.append(now() - t)
        n += 1
    await call.done_writing()
    return n


async def run(
    address: str,
    streams: int,
    channel: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
) -> tuple[float, float, float]:
    async with channel(address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest())).header.cluster_id
        lat: list[float] = []
        start = now()
        counts = await asyncio.gather(
            *(stream(stub, cid, start + DURATION_S, lat) for _ in range(streams))
        )
        elapsed = now() - start
    return sum(counts) / elapsed, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3


def main() -> int:
    pd = start_server("bench-tso")
    try:
        print(f"{'streams':>8} {'ts/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'server CPU s':>13}")
        for streams in (1, 8, 64):
            progress(f"{streams} streams for {DURATION_S:.0f} s")
            cpu0 = cpu_seconds(pd.proc.pid)  # type: ignore[union-attr]
            rate, p50, p99 = asyncio.run(run(pd.address, streams))
            cpu = cpu_seconds(pd.proc.pid) - cpu0  # type: ignore[union-attr]
            print(f"{streams:>8} {rate:>10.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>13.2f}")
        print(f"server RSS: {rss_bytes(pd.proc.pid) / 2**20:.1f} MiB")  # type: ignore[union-attr]
    finally:
        pd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
