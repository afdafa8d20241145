"""Shared helpers for the benchmark scripts: a kubepd server subprocess, its CPU time
and memory from /proc, percentiles, and a progress line."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.pdproc import PdProcess

CLK = os.sysconf("SC_CLK_TCK")


# The client port with gRPC alone on it, and shared with PD's HTTP API (the default):
# benchmarks of the gRPC paths run both in one run to show what sharing costs.
PORT_MODES = {"grpc-only": ["--client-port-http", "off"], "shared": []}


def start_server(
    name: str = "bench", extra: list[str] | None = None, cwd: Path | None = None
) -> PdProcess:
    """`cwd`: a checkout whose `pdcore` to run instead of this one."""
    tmp = Path(tempfile.mkdtemp(prefix="kubepd-bench-"))
    args = ["--log-level", "warning", *(extra or [])]
    return PdProcess(tmp / "data", name=name, extra=args, cwd=cwd).start()


def cpu_seconds(pid: int) -> float:
    """User and system CPU of `pid` and of its living child processes (the client port's
    splice pump is one), recursively."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLK
    return own + sum(cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass  # the thread ended meanwhile
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def progress(msg: str) -> None:
    print(f"  … {msg}", file=sys.stderr, flush=True)


def now() -> float:
    return time.perf_counter()


async def bootstrap_stores(
    stub: object, cluster_id: int, n_stores: int, id_budget: int
) -> tuple[list[int], int]:
    """Bootstrap a cluster on the first of `n_stores` fake stores, register the others,
    and reserve `id_budget` ids for regions and peers. Returns (store ids, first id)."""
    from pdcore.proto import metapb_pb2, pdpb_pb2

    s = stub  # a pdpb_pb2_grpc.PDStub on an aio channel
    h = pdpb_pb2.RequestHeader(cluster_id=cluster_id)
    last = (await s.AllocID(pdpb_pb2.AllocIDRequest(header=h, count=n_stores + 2))).id  # type: ignore[attr-defined]
    stores = list(range(last - n_stores - 1, last - 1))
    await s.Bootstrap(
        pdpb_pb2.BootstrapRequest(  # type: ignore[attr-defined]
            header=h,
            store=metapb_pb2.Store(id=stores[0], address="127.0.0.1:1", version="8.5.0"),
            region=metapb_pb2.Region(
                id=last - 1,
                region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
                peers=[metapb_pb2.Peer(id=last, store_id=stores[0])],
            ),
        )
    )
    for i, sid in enumerate(stores[1:]):
        await s.PutStore(
            pdpb_pb2.PutStoreRequest(  # type: ignore[attr-defined]
                header=h,
                store=metapb_pb2.Store(id=sid, address=f"127.0.0.1:{i + 2}", version="8.5.0"),
            )
        )
    end = (await s.AllocID(pdpb_pb2.AllocIDRequest(header=h, count=id_budget))).id  # type: ignore[attr-defined]
    return stores, end - id_budget + 1
