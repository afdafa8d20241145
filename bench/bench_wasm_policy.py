"""Wasm policy cost: per-call overhead with an empty snapshot, and one balance-leader run
over 100,000 regions / 10 stores (snapshot encode, call, decode), against the built-in
Python balance-leader making the same decision on the same cluster in the same run."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import pct, progress

from pdcore.adapters.wasm.host import Limits, PolicyInstance, WasmHost
from pdcore.domain.config import ClusterConfig
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store, StoreStats
from pdcore.policy.abi import PolicyInput, encode_snapshot
from pdcore.scheduling import policy_bridge
from pdcore.scheduling.cluster import MemoryCluster
from pdcore.scheduling.controller import OperatorController
from pdcore.scheduling.diagnostics import Diagnosis
from pdcore.scheduling.schedulers.balance_leader import BalanceLeader
from pdcore.scheduling.schedulers.base import SchedContext

ROOT = Path(__file__).resolve().parent.parent
REGIONS, STORES = 100_000, 10


def cluster() -> MemoryCluster:
    now = time.time()
    c = MemoryCluster(config=ClusterConfig())
    c.add_stores(
        [
            Store(
                i,
                f"s{i}:1",
                last_heartbeat_ns=int(now * 1e9),
                stats=StoreStats(capacity=1 << 40, available=1 << 39),
            )
            for i in range(1, STORES + 1)
        ]
    )
    rng = random.Random(1)
    for i in range(REGIONS):
        stores = rng.sample(range(1, STORES + 1), 3)
        # Skewed: store 1 leads a third of everything.
        leader = 1 if 1 in stores and rng.random() < 0.9 else stores[0]
        peers = tuple(Peer(i * 10 + s, s) for s in stores)
        c.tree.put(
            Region(
                i + 1,
                b"k%08d" % i,
                b"k%08d" % (i + 1),
                RegionEpoch(3, 2),
                peers,
                leader=next(p for p in peers if p.store_id == leader),
                approximate_size=96,
            )
        )
    return c


def main() -> int:
    subprocess.run(["bash", str(ROOT / "policies" / "build.sh")], check=True, capture_output=True)
    host = WasmHost()
    inst = PolicyInstance(
        host,
        (ROOT / "policies" / "build" / "balance_leader.wasm").read_bytes(),
        Limits(fuel=10**10, memory_bytes=256 << 20, timeout_ms=10_000),
    )
    progress("per-call overhead")
    empty = encode_snapshot(PolicyInput([], [], {}))
    lat = []
    for _ in range(2000):
        t = time.perf_counter()
        inst.run(empty)
        lat.append((time.perf_counter() - t) * 1e6)
    print(
        f"per-call overhead (empty snapshot): p50 {pct(lat, 50):.0f} µs, p99 {pct(lat, 99):.0f} µs"
    )
    progress(f"building {REGIONS} regions")
    c = cluster()
    ctrl = OperatorController(c)
    now = time.time()
    enc, call, py = [], [], []
    for _ in range(5):
        t0 = time.perf_counter()
        inp = policy_bridge.build_input(c, ctrl, now, {"batch": 4, "tolerance": 5}, 64)
        snap = encode_snapshot(inp)
        t1 = time.perf_counter()
        result = inst.run(snap)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        call.append(t2 - t1)
        t3 = time.perf_counter()
        sched = BalanceLeader()
        ops = sched.schedule(
            SchedContext(c, ctrl, now, random.Random(1), lambda: 1), Diagnosis("b")
        )
        py.append(time.perf_counter() - t3)
    n_wasm = len(getattr(result, "proposals", []))
    print(f"snapshot of {REGIONS} regions: {len(snap) / 2**20:.1f} MiB")
    print(f"{'':32} {'median ms':>10}")
    print(f"{'wasm: build + encode snapshot':32} {statistics.median(enc) * 1e3:>10.1f}")
    print(f"{'wasm: call (copy in, run, decode)':32} {statistics.median(call) * 1e3:>10.1f}")
    total = statistics.median([a + b for a, b in zip(enc, call, strict=True)])
    print(f"{'wasm: total':32} {total * 1e3:>10.1f}")
    print(f"{'python balance-leader (sampling)':32} {statistics.median(py) * 1e3:>10.1f}")
    print(f"proposals: wasm {n_wasm}, python operators {len(ops)}")
    print(f"ratio wasm total / python: {total / statistics.median(py):.1f}x")
    print(f"ratio wasm call alone / python: {statistics.median(call) / statistics.median(py):.1f}x")
    host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
