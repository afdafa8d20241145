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


def start_server(name: str = "bench") -> PdProcess:
    tmp = Path(tempfile.mkdtemp(prefix="kubepd-bench-"))
    return PdProcess(tmp / "data", name=name, extra=["--log-level", "warning"]).start()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


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
