"""kubepd beside Go PD under PD's own TSO load generator, in one run.

Go PD (`pd-server`, built without the dashboard) and `pd-tso-bench` come from
`scripts/gopd-build`, which builds them outside the repository into
~/.cache/kubepd/gopd-<version>/bin. Each server runs on loopback with a temporary data
directory; the same `pd-tso-bench` flags run against each, one after the other, ROUNDS times
alternately, and the medians and the ratio kubepd / Go PD are printed. kubepd runs twice:
with the client port shared with the HTTP API (the default) and with gRPC alone on it.

`--baseline DIR` adds kubepd run from another checkout (for example `git archive` of an
earlier commit into DIR), both port modes, for before/after numbers from the same run.

Skips (exit 0) with a message when the Go binaries are not built. Bounded: every server
start and every load run has a timeout.

    bench/bench_vs_gopd.py [--client 1] [-c 100] [--duration 10] [--rounds 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from _common import PORT_MODES, cpu_seconds, progress, start_server

from tests.support.pdproc import PdProcess
from tests.support.ports import free_port

GOPD_VERSION = os.environ.get("GOPD_VERSION", "v8.5.7")
CACHE = Path(os.environ.get("KUBEPD_CACHE", Path.home() / ".cache" / "kubepd"))
GOPD_BIN = CACHE / f"gopd-{GOPD_VERSION}" / "bin"
START_TIMEOUT_S = 60.0

COUNT_RE = re.compile(r"Total:\s*\ncount: (\d+)")
PCT_RE = re.compile(r"P0\.5: ([\d.]+)ms, P0\.8: [\d.]+ms, P0\.9: [\d.]+ms, P0\.99: ([\d.]+)ms")


@dataclass
class Result:
    rate: float  # timestamps per second
    p50_ms: float
    p99_ms: float
    cpu_us: float = 0.0  # server CPU per timestamp

    FIELDS: ClassVar[tuple[str, ...]] = ("rate", "p50_ms", "p99_ms", "cpu_us")


def row(name: str, r: Result) -> str:
    return f"{name:>18} {r.rate:>10.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {r.cpu_us:>10.2f}"


class GoPd:
    """One Go PD member on loopback, its data in a temporary directory."""

    def __init__(self, binary: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gopd-bench-"))
        self.port = free_port()
        peer = free_port()
        url, peer_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{peer}"
        self.log = open(self.dir / "pd.log", "wb")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--name=pd",
                f"--data-dir={self.dir / 'data'}",
                f"--client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--peer-urls={peer_url}",
                f"--advertise-peer-urls={peer_url}",
                f"--initial-cluster=pd={peer_url}",
                f"--log-file={self.dir / 'pd-server.log'}",
            ],
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self) -> GoPd:
        """Ready once it answers as leader: /pd/api/v1/leader names a member."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pd-server exited early; see {self.dir}")
            try:
                url = f"http://{self.address}/pd/api/v1/leader"
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200 and b'"name"' in r.read():
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"pd-server did not become leader; see {self.dir}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def tso_bench(address: str, clients: int, concurrency: int, duration_s: int) -> Result:
    cmd = [
        str(GOPD_BIN / "pd-tso-bench"),
        f"-pd={address}",
        f"-client={clients}",
        f"-c={concurrency}",
        f"-duration={duration_s}s",
        "-count=1",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + 60, check=True
    ).stdout
    count, pcts = COUNT_RE.search(out), PCT_RE.search(out)
    if count is None or pcts is None:
        raise RuntimeError(f"unexpected pd-tso-bench output:\n{out[-2000:]}")
    return Result(int(count.group(1)) / duration_s, float(pcts.group(1)), float(pcts.group(2)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", type=int, default=1)
    ap.add_argument("-c", "--concurrency", type=int, default=100)
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="a checkout whose kubepd to run as well")
    args = ap.parse_args()
    missing = [b for b in ("pd-server", "pd-tso-bench") if not (GOPD_BIN / b).is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} not built in {GOPD_BIN}; run scripts/gopd-build")
        return 0

    gopd = GoPd(GOPD_BIN / "pd-server").wait_ready()
    servers: dict[str, GoPd | PdProcess] = {"go-pd": gopd}
    try:
        for mode, extra in PORT_MODES.items():
            servers[f"kubepd {mode}"] = start_server(f"bench-vs-gopd-{mode}", extra)
            if args.baseline is not None:
                servers[f"baseline {mode}"] = start_server(
                    f"bench-vs-gopd-base-{mode}", extra, cwd=args.baseline.resolve()
                )
        print(
            f"pd-tso-bench -client {args.client} -c {args.concurrency}"
            f" -duration {args.duration}s, {args.rounds} rounds"
        )
        print(f"{'server':>18} {'ts/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/ts':>10}")
        rows: dict[str, list[Result]] = {name: [] for name in servers}
        for rnd in range(args.rounds):
            for name, srv in servers.items():
                progress(f"{name}: round {rnd + 1}")
                pid = srv.proc.pid  # type: ignore[union-attr]
                cpu0 = cpu_seconds(pid)
                r = tso_bench(srv.address, args.client, args.concurrency, args.duration)
                r.cpu_us = (cpu_seconds(pid) - cpu0) / max(1.0, r.rate * args.duration) * 1e6
                rows[name].append(r)
                print(row(name, r))
        print(f"medians of {args.rounds} rounds (last column: throughput / Go PD's):")
        base = statistics.median(r.rate for r in rows["go-pd"])
        for name, got in rows.items():
            med = Result(*(statistics.median(getattr(r, f) for r in got) for f in Result.FIELDS))
            print(f"{row(name, med)} {med.rate / base:>6.2f}x")
    finally:
        for srv in servers.values():
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
