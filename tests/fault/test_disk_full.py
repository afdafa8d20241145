"""A full disk under a real `kubepd serve` (RLIMIT_FSIZE set on the running process, so
its database files cannot grow): writes fail with PD errors naming the cause — never
`UNKNOWN: Unexpected` — nothing half-applied is served, and once there is room again
the same process carries on; after a kill -9 the database opens and nothing
acknowledged is lost."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import grpc

from pdcore.domain.tso import LOGICAL_BITS
from pdcore.proto import metapb_pb2, pdpb_pb2, pdpb_pb2_grpc
from tests.support.pdclient import bootstrap_request
from tests.support.pdproc import PdProcess


class Client:
    def __init__(self, pd: PdProcess) -> None:
        self.channel = pd.channel()
        self.stub = pdpb_pb2_grpc.PDStub(self.channel)
        self.header = pdpb_pb2.RequestHeader(cluster_id=pd.cluster_id())

    def alloc(self, count: int = 1) -> int:
        resp = self.stub.AllocID(
            pdpb_pb2.AllocIDRequest(header=self.header, count=count), timeout=5
        )
        assert not resp.header.HasField("error"), resp.header.error
        return int(resp.id)

    def put_store(self, sid: int) -> str:
        store = metapb_pb2.Store(id=sid, address=f"127.0.0.1:{20000 + sid}", version="8.5.0")
        resp = self.stub.PutStore(
            pdpb_pb2.PutStoreRequest(header=self.header, store=store), timeout=5
        )
        return str(resp.header.error.message) if resp.header.HasField("error") else ""

    def tso(self) -> int:
        req = pdpb_pb2.TsoRequest(header=self.header, count=1)
        resp = next(self.stub.Tso(iter([req]), timeout=5))
        return int((resp.timestamp.physical << LOGICAL_BITS) | resp.timestamp.logical)

    def stores(self) -> set[int]:
        resp = self.stub.GetAllStores(pdpb_pb2.GetAllStoresRequest(header=self.header), timeout=5)
        return {s.id for s in resp.stores}

    def bootstrap(self) -> None:
        sid, rid, pid = self.alloc(), self.alloc(), self.alloc()
        resp = self.stub.Bootstrap(bootstrap_request(self.header, sid, rid, pid), timeout=5)
        assert not resp.header.HasField("error"), resp.header.error


def test_a_full_disk_refuses_writes_cleanly_and_recovers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pd = PdProcess(data, name="pd", extra=["--log-format", "text"]).start()
    try:
        c = Client(pd)
        c.bootstrap()
        acked = {sid for sid in range(100, 110) if not c.put_store(sid)}
        last_id, last_ts = c.alloc(), c.tso()
        sizes = [f.stat().st_size for f in [*data.glob("kubepd.db*"), pd.log_path]]
        assert pd.proc is not None
        limit = max(sizes) + 16 * 1024
        # The soft limit only: raising it back later needs no privilege.
        _, hard = resource.prlimit(pd.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pd.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))

        refused, message = None, ""
        for sid in range(200, 2200):
            message = c.put_store(sid)
            if message:
                refused = sid
                break
            acked.add(sid)
        assert refused is not None, "the disk never filled up"
        assert "storage write failed" in message and "Unexpected" not in message, message
        assert refused not in c.stores() and acked <= c.stores()
        # Reserving ids needs a write too: refused, and none of them handed out.
        resp = c.stub.AllocID(pdpb_pb2.AllocIDRequest(header=c.header, count=5000), timeout=5)
        assert resp.header.HasField("error") and "storage write failed" in resp.header.error.message
        # TSO keeps serving inside its saved window, then refuses with the cause.
        deadline = time.monotonic() + 15
        while True:
            try:
                ts = c.tso()
                assert ts > last_ts
                last_ts = ts
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNKNOWN, e  # type: ignore[attr-defined]
                assert "storage write failed" in (e.details() or ""), e  # type: ignore[attr-defined]
                break
            assert time.monotonic() < deadline, "TSO never needed to save its window"
            time.sleep(0.05)
        assert pd.proc.poll() is None  # still running

        resource.prlimit(pd.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert c.put_store(refused) == ""
        acked.add(refused)
        assert c.alloc() > last_id
        deadline = time.monotonic() + 10
        while True:  # the window is saved again on the next request or keeper tick
            try:
                assert c.tso() > last_ts
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        last_id = c.alloc(10)
        c.channel.close()

        pd.kill9()
        pd = PdProcess(data, name="pd", port=pd.port, status_port=pd.status_port).start()
        c = Client(pd)
        assert acked <= c.stores()
        assert c.alloc() > last_id
        c.channel.close()
        log = pd.log_path.read_text()
        assert "Unexpected" not in log and "Traceback" not in log
    finally:
        pd.stop()
