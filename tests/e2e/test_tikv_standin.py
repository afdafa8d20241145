"""`kubepd tikv-standin` as processes against `kubepd serve`: the first one bootstraps,
the next joins, each opens TiKV's port once registered, and a restarted one keeps its
store id (read from --data-dir)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdcore.cli.tikv_standin import parse_labels
from tests.support.kubecluster import stop_process
from tests.support.pdproc import PdProcess
from tests.support.ports import free_port


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[PdProcess]:
    p = PdProcess(tmp_path / "pd").start()
    try:
        yield p
    finally:
        p.stop()


def standin(pd: PdProcess, data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "tikv-standin",
            f"--pd={pd.address}",
            f"--addr=127.0.0.1:{port}",
            f"--advertise-addr=tikv-{port}.peer.test.svc:{port}",
            f"--data-dir={data_dir}",
            "--config=/etc/tikv/tikv.toml",
            "--store-heartbeat=1",
            "--labels=zone=a",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stores(pd: PdProcess) -> dict[str, dict[str, object]]:
    try:
        with urllib.request.urlopen(pd.status + "/pd/api/v1/stores", timeout=2) as r:
            data = json.load(r)
    except urllib.error.HTTPError:  # not bootstrapped yet
        return {}
    return {s["store"]["address"]: s for s in data.get("stores", [])}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait(cond: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_standins_bootstrap_join_and_keep_their_store_ids(pd: PdProcess, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    procs = [
        standin(pd, tmp_path / f"s{i}", port, tmp_path / f"s{i}.log")
        for i, port in enumerate(ports)
    ]
    try:
        addrs = [f"tikv-{p}.peer.test.svc:{p}" for p in ports]
        wait(lambda: set(addrs) <= set(stores(pd)), "both stores registered")
        wait(lambda: all(port_open(p) for p in ports), "TiKV ports open")
        first = stores(pd)
        ids = {a: first[a]["store"]["id"] for a in addrs}  # type: ignore[index]
        assert len(set(ids.values())) == 2
        assert all(first[a]["store"]["labels"] == [{"key": "zone", "value": "a"}] for a in addrs)
        # Exactly one of them bootstrapped: the cluster has one region, led by that store.
        wait(
            lambda: (
                sum(int(s["status"].get("region_count", 0)) for s in stores(pd).values())  # type: ignore[attr-defined]
                == 1
            ),
            "the bootstrap region reported",
        )
        stop_process(procs[1])
        procs[1] = standin(pd, tmp_path / "s1", ports[1], tmp_path / "s1.log")
        wait(lambda: port_open(ports[1]), "restarted stand-in up")
        again = stores(pd)
        assert len(again) == 2
        assert again[addrs[1]]["store"]["id"] == ids[addrs[1]]  # type: ignore[index]
    finally:
        for p in procs:
            stop_process(p)


def test_bad_labels_are_refused() -> None:
    assert parse_labels("zone=a, host=h1") == {"zone": "a", "host": "h1"}
    with pytest.raises(ValueError, match="want key=value"):
        parse_labels("zone")
