"""`kubepd serve` as a user runs it: --help, a config file, bad configuration, health and
metrics, and a clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.pdproc import PdProcess
from tests.support.ports import free_port


def kubepd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdcore.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_explains_every_flag() -> None:
    out = kubepd("serve", "--help").stdout
    for flag in (
        "--name",
        "--data-dir",
        "--client-urls",
        "--advertise-client-urls",
        "--status-addr",
        "--config",
        "--log-level",
        "--log-format",
        "--max-message-bytes",
        "--client-port-http",
    ):
        line = next((ln for ln in out.splitlines() if flag in ln), "")
        assert line, flag
    for sub in ("serve", "simulate", "demo", "sidecar", "scheduler", "operator", "policy"):
        assert sub in kubepd("--help").stdout


def test_config_file_and_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('nmae = "typo"\n')
    out = kubepd("serve", "--config", str(bad))
    assert out.returncode != 0 and "unknown key 'nmae'" in out.stderr
    bad.write_text('client-port-http = "maybe"\n')
    out = kubepd("serve", "--config", str(bad))
    assert out.returncode != 0 and "client-port-http must be 'on' or 'off'" in out.stderr
    port, status = free_port(), free_port()
    good = tmp_path / "pd.toml"
    good.write_text(
        f'name = "from-file"\nclient-urls = "http://127.0.0.1:{port}"\n'
        f'status-addr = "127.0.0.1:{status}"\ndata-dir = "{tmp_path / "d"}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdcore.cli.main", "serve", "--config", str(good)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        import time

        deadline = time.monotonic() + 20
        while True:
            try:
                body = (
                    urllib.request.urlopen(f"http://127.0.0.1:{status}/health", timeout=1)
                    .read()
                    .decode()
                )
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert '"name": "from-file"' in body.replace('":"', '": "')
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0


def test_sigterm_is_a_clean_shutdown_and_metrics_use_pd_names(tmp_path: Path) -> None:
    pd = PdProcess(tmp_path / "data").start()
    metrics = urllib.request.urlopen(pd.status + "/metrics", timeout=5).read().decode()
    for name in (
        "pd_cluster_status",
        "pd_scheduler_region_heartbeat_total",
        "pd_tso_events_total",
        "pd_server_handle_tso_duration_seconds",
    ):
        assert name in metrics, name
    assert pd.stop() == 0
    log = pd.log_path.read_text()
    assert '"msg": "stopped"' in log
    assert (tmp_path / "data" / "kubepd.db").exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    pd = PdProcess(tmp_path / "a").start()
    try:
        out = kubepd(
            "serve",
            "--data-dir",
            str(tmp_path / "b"),
            "--client-urls",
            f"http://{pd.address}",
            "--status-addr",
            f"127.0.0.1:{free_port()}",
        )
        assert out.returncode == 1 and f"cannot listen on {pd.address}" in out.stderr
    finally:
        pd.stop()
