"""TLS cost: TSO latency and region-heartbeat ingestion against two `kubepd serve`
processes in the same run, one in plain text and one with mutual TLS (client
certificates required), in alternating rounds. Prints the medians and the ratios."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
from _common import bootstrap_stores, cpu_seconds, now, progress
from bench_heartbeats import REGIONS, processed, pump, requests
from bench_tso import run as tso_run

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.support.certs import CertAuthority
from tests.support.pdproc import PdProcess

STREAMS = 8
HB_STREAMS = 4
HB_SECONDS = 4.0
ROUNDS = 3  # medians of alternating rounds: a busy moment on the machine hits both

Channel = Callable[[str], grpc.aio.Channel]
Batches = list[list[pdpb_pb2.RegionHeartbeatRequest]]


async def prepare(pd: PdProcess, channel: Channel) -> Batches:
    """Bootstrap, and one pass of heartbeats so every region is known (unchanged after)."""
    async with channel(pd.address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest())).header.cluster_id
        stores, first = await bootstrap_stores(stub, cid, HB_STREAMS, REGIONS * 40)
    batches = requests(cid, stores, first)
    await pump(pd.address, batches, now() + 3.0, channel)
    return batches


async def heartbeats(
    pd: PdProcess, channel: Channel, ctx: ssl.SSLContext | None, batches: Batches
) -> float:
    n0, t0 = processed(pd.status, ctx), now()
    await pump(pd.address, batches, now() + HB_SECONDS, channel)
    await asyncio.sleep(0.5)  # let the server drain what is in flight
    return (processed(pd.status, ctx) - n0) / (now() - t0)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="kubepd-bench-tls-"))
    ca = CertAuthority(tmp / "ca")
    server, client = ca.issue("pd-server", server=True), ca.issue("tikv")
    http_ctx = ssl.create_default_context(cafile=str(ca.path))
    http_ctx.load_cert_chain(str(client.cert), str(client.key))
    creds = grpc.ssl_channel_credentials(
        ca.path.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
    )
    quiet = ["--log-level", "warning"]
    tls_flags = ["--cacert", str(ca.path), "--cert", str(server.cert), "--key", str(server.key)]
    plain = PdProcess(tmp / "plain", name="plain", extra=quiet).start()
    mtls = PdProcess(tmp / "tls", name="tls", extra=quiet + tls_flags, health_context=http_ctx)
    mtls.start()
    modes: list[tuple[str, PdProcess, Channel, ssl.SSLContext | None]] = [
        ("plain", plain, grpc.aio.insecure_channel, None),
        ("mTLS", mtls, lambda a: grpc.aio.secure_channel(a, creds), http_ctx),
    ]
    rows: dict[str, list[tuple[float, ...]]] = {"plain": [], "mTLS": []}
    try:
        batches = {name: asyncio.run(prepare(pd, ch)) for name, pd, ch, _ in modes}
        for r in range(ROUNDS):
            for name, pd, channel, ctx in modes:
                progress(f"round {r + 1}/{ROUNDS}, {name}: TSO, then heartbeats")
                cpu0 = cpu_seconds(pd.proc.pid)  # type: ignore[union-attr]
                rate, p50, p99 = asyncio.run(tso_run(pd.address, STREAMS, channel))
                cpu = cpu_seconds(pd.proc.pid) - cpu0  # type: ignore[union-attr]
                hb = asyncio.run(heartbeats(pd, channel, ctx, batches[name]))
                rows[name].append((rate, p50, p99, cpu, hb))
    finally:
        plain.stop()
        mtls.stop()
    med = {n: [statistics.median(c) for c in zip(*runs, strict=True)] for n, runs in rows.items()}
    print(f"{'mode':>6} {'ts/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'TSO CPU s':>9} {'hb/s':>8}")
    for name, (rate, p50, p99, cpu, hb) in med.items():
        print(f"{name:>6} {rate:>8.0f} {p50:>7.3f} {p99:>7.3f} {cpu:>9.2f} {hb:>8.0f}")
    p, t = med["plain"], med["mTLS"]
    print(
        f"mTLS / plain (medians of {ROUNDS}): TSO p99 x{t[2] / p[2]:.2f}, "
        f"heartbeats/s x{t[4] / p[4]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
