"""Wasm policy cost: per-call overhead with an empty snapshot, and one balance-leader run
over 100,000 regions / 10 stores (snapshot encode, call, decode), against the built-in
Python balance-leader making the same decision on the same cluster in the same run.

The snapshot is timed three ways: the full path (`build_input` + `encode_snapshot`), the
incremental `SnapshotEncoder` cold (empty cache) and warm (after 1% of the regions
changed since its last run, as between two runs of a policy)."""

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
CHURN = REGIONS // 100


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


def churn(c: MemoryCluster, rng: random.Random, n: int) -> None:
    """`n` regions replaced by heartbeats: a new version and another leader."""
    for rid in rng.sample(range(1, REGIONS + 1), n):
        r = c.tree.get(rid)
        assert r is not None
        leader = rng.choice([p for p in r.peers if p != r.leader])
        c.tree.put(r.with_(epoch=RegionEpoch(r.epoch.conf_ver, r.epoch.version + 1), leader=leader))


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
    config: dict[str, object] = {"batch": 4, "tolerance": 5}
    rng = random.Random(2)
    full, cold, warm, call, py = [], [], [], [], []
    for _ in range(5):
        t0 = time.perf_counter()
        snap = encode_snapshot(policy_bridge.build_input(c, ctrl, now, config, 64))
        t1 = time.perf_counter()
        encoder = policy_bridge.SnapshotEncoder()
        cold_snap = encoder.encode(c, ctrl, now, config, 64).data
        t2 = time.perf_counter()
        assert cold_snap == snap
        churn(c, rng, CHURN)
        t3 = time.perf_counter()
        snap = encoder.encode(c, ctrl, now, config, 64).data
        t4 = time.perf_counter()
        assert encoder.encoded == CHURN
        result = inst.run(snap)
        t5 = time.perf_counter()
        full.append(t1 - t0)
        cold.append(t2 - t1)
        warm.append(t4 - t3)
        call.append(t5 - t4)
        t6 = time.perf_counter()
        sched = BalanceLeader()
        ops = sched.schedule(
            SchedContext(c, ctrl, now, random.Random(1), lambda: 1), Diagnosis("b")
        )
        py.append(time.perf_counter() - t6)
    # Outside the timing: the warm snapshot is the full path's, byte for byte.
    assert snap == encode_snapshot(policy_bridge.build_input(c, ctrl, now, config, 64))
    n_wasm = len(getattr(result, "proposals", []))
    med = {k: statistics.median(v) for k, v in (("full", full), ("cold", cold), ("warm", warm))}
    print(f"snapshot of {REGIONS} regions: {len(snap) / 2**20:.1f} MiB")
    print(f"{'':48} {'median ms':>10}")
    print(f"{'snapshot: build_input + encode_snapshot':48} {med['full'] * 1e3:>10.1f}")
    print(f"{'snapshot: SnapshotEncoder, cold':48} {med['cold'] * 1e3:>10.1f}")
    print(f"{f'snapshot: SnapshotEncoder, warm ({CHURN} changed)':48} {med['warm'] * 1e3:>10.1f}")
    print(f"{'wasm: call (copy in, run, decode)':48} {statistics.median(call) * 1e3:>10.1f}")
    total = statistics.median([a + b for a, b in zip(warm, call, strict=True)])
    print(f"{'wasm: total (warm snapshot + call)':48} {total * 1e3:>10.1f}")
    print(f"{'python balance-leader (sampling)':48} {statistics.median(py) * 1e3:>10.1f}")
    print(f"proposals: wasm {n_wasm}, python operators {len(ops)}")
    print(f"ratio snapshot full / cold: {med['full'] / med['cold']:.1f}x")
    print(f"ratio snapshot full / warm: {med['full'] / med['warm']:.1f}x")
    print(f"ratio wasm total / python: {total / statistics.median(py):.1f}x")
    print(f"ratio wasm call alone / python: {statistics.median(call) / statistics.median(py):.1f}x")
    host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
