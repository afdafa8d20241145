"""TSO throughput and latency against a `kubepd serve` process, with 1, 8 and 64
concurrent Tso streams (each sends count=1 requests back to back, as a client without
batching would). The client runs in this process; the server in its own. Two servers
run side by side: gRPC alone on the client port, and the port shared with the HTTP API
(the default); each stream count is measured on both, alternately, ROUNDS times."""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable

import grpc
from _common import PORT_MODES, cpu_seconds, now, pct, progress, rss_bytes, start_server

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc

DURATION_S = 3.0
ROUNDS = 3
STREAMS = (1, 8, 64)


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
    servers = {mode: start_server(f"bench-tso-{mode}", extra) for mode, extra in PORT_MODES.items()}
    try:
        print(
            f"{'port':>10} {'streams':>8} {'ts/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'server CPU s':>13} {'CPU us/ts':>10}"
        )
        medians: list[str] = []
        for streams in STREAMS:
            rows: dict[str, list[tuple[float, ...]]] = {mode: [] for mode in servers}
            for rnd in range(ROUNDS):
                for mode, pd in servers.items():
                    progress(f"{mode}: {streams} streams for {DURATION_S:.0f} s ({rnd + 1})")
                    cpu0 = cpu_seconds(pd.proc.pid)  # type: ignore[union-attr]
                    rate, p50, p99 = asyncio.run(run(pd.address, streams))
                    cpu = cpu_seconds(pd.proc.pid) - cpu0  # type: ignore[union-attr]
                    per_ts = cpu / max(1.0, rate * DURATION_S) * 1e6
                    rows[mode].append((rate, p50, p99, per_ts))
                    print(
                        f"{mode:>10} {streams:>8} {rate:>10.0f} {p50:>8.3f} {p99:>8.3f}"
                        f" {cpu:>13.2f} {per_ts:>10.1f}"
                    )
            for mode, got in rows.items():
                med = [statistics.median(col) for col in zip(*got, strict=True)]
                medians.append(
                    f"{mode:>10} {streams:>8} {med[0]:>10.0f} {med[1]:>8.3f} {med[2]:>8.3f}"
                    f" {'':>13} {med[3]:>10.1f}"
                )
        print(f"medians of {ROUNDS} rounds:")
        print("\n".join(medians))
        for mode, pd in servers.items():
            print(f"{mode} server RSS: {rss_bytes(pd.proc.pid) / 2**20:.1f} MiB")  # type: ignore[union-attr]
    finally:
        for pd in servers.values():
            pd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
