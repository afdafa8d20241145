"""Real `kubepd serve` processes on one --data-dir: the second refuses to start and the
first keeps serving; after kill -9 and a lost database, a restart is refused until
--force-new-cluster is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.support.pdproc import PdProcess


def tso(pd: PdProcess, cluster_id: int) -> int:
    req = pdpb_pb2.TsoRequest(header=pdpb_pb2.RequestHeader(cluster_id=cluster_id), count=1)
    with pd.channel() as ch:
        resp = next(iter(pdpb_pb2_grpc.PDStub(ch).Tso(iter([req]), timeout=5)))
    return (resp.timestamp.physical << 18) | resp.timestamp.logical


def test_a_second_process_on_the_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = PdProcess(data, name="first").start()
    second = PdProcess(data, name="second")
    try:
        cid = first.cluster_id()
        before = tso(first, cid)
        with pytest.raises(RuntimeError, match="exited early"):
            second.start()
        assert second.proc is not None and second.proc.wait(10) == 1
        log = second.log_path.read_text()
        assert f"in use by another kubepd process (pid {first.proc.pid})" in log  # type: ignore[union-attr]
        assert "Traceback" not in log
        assert tso(first, cid) > before  # the first one is untouched and still serving
    finally:
        second.stop()
        first.stop()


def test_a_lost_database_is_refused_until_force_new_cluster(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pd = PdProcess(data, name="pd").start()
    cid = pd.cluster_id()
    pd.kill9()
    for f in data.glob("kubepd.db*"):
        f.unlink()
    again = PdProcess(data, name="pd", port=pd.port, status_port=pd.status_port)
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            again.start()
        log = again.log_path.read_text()
        assert f"held cluster {cid}, but its database is missing or empty" in log
        assert not list(data.glob("kubepd.db*"))  # refused before creating anything
    finally:
        again.stop()
    forced = PdProcess(data, name="pd", extra=["--force-new-cluster"]).start()
    try:
        assert forced.cluster_id() not in (0, cid)
    finally:
        forced.stop()
