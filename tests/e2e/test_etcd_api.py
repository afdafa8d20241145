"""The etcd v3 API over real sockets: every kind of bad input gets etcd's gRPC status
and message, and leaves the store (its revision, keys and leases) unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdcore.app import PdServer
from pdcore.proto import etcdserverpb_pb2 as pb
from pdcore.proto import etcdserverpb_pb2_grpc as rpc
from tests.e2e.conftest import running_server

Code = grpc.StatusCode
INVALID = Code.INVALID_ARGUMENT


class Etcd:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.kv = rpc.KVStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.watch = rpc.WatchStub(channel)
        self.maintenance = rpc.MaintenanceStub(channel)
        self.cluster = rpc.ClusterStub(channel)

    async def revision(self) -> int:
        resp = await self.kv.Range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"))
        return int(resp.header.revision)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PdServer]:
    """kubepd with its default message limit, so etcd's own request limit applies."""
    async with running_server(tmp_path, name="pd-etcd") as srv:
        yield srv


@pytest.fixture
async def etcd(server: PdServer) -> AsyncIterator[Etcd]:
    channel = grpc.aio.insecure_channel(server.client_address)
    try:
        yield Etcd(channel)
    finally:
        await channel.close()


async def rejected(call: Awaitable[Any], code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert (e.value.code(), e.value.details()) == (code, message)


def put(key: bytes, value: bytes = b"v", **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


async def test_kv_bad_input_gets_etcds_errors_and_changes_nothing(
    server: PdServer, etcd: Etcd
) -> None:
    first = await etcd.kv.Put(pb.PutRequest(key=b"a", value=b"1"))
    await etcd.kv.Put(pb.PutRequest(key=b"a", value=b"2"))
    await etcd.kv.Compact(pb.CompactionRequest(revision=first.header.revision + 1))
    before = await etcd.revision()
    kv = etcd.kv
    cases: list[tuple[Callable[[], Awaitable[Any]], grpc.StatusCode, str]] = [
        (lambda: kv.Range(pb.RangeRequest(key=b"")), INVALID, "etcdserver: key is not provided"),
        (lambda: kv.Put(pb.PutRequest(key=b"")), INVALID, "etcdserver: key is not provided"),
        (
            lambda: kv.DeleteRange(pb.DeleteRangeRequest(key=b"")),
            INVALID,
            "etcdserver: key is not provided",
        ),
        (
            lambda: kv.Put(pb.PutRequest(key=b"a", value=b"x", ignore_value=True)),
            INVALID,
            "etcdserver: value is provided",
        ),
        (
            lambda: kv.Put(pb.PutRequest(key=b"a", lease=5, ignore_lease=True)),
            INVALID,
            "etcdserver: lease is provided",
        ),
        (
            lambda: kv.Put(pb.PutRequest(key=b"new", ignore_value=True)),
            INVALID,
            "etcdserver: key not found",
        ),
        (
            lambda: kv.Put(pb.PutRequest(key=b"a", value=b"x", lease=12345)),
            Code.NOT_FOUND,
            "etcdserver: requested lease not found",
        ),
        (
            lambda: kv.Txn(pb.TxnRequest(success=[put(b"k%d" % i) for i in range(129)])),
            INVALID,
            "etcdserver: too many operations in txn request",
        ),
        (
            lambda: kv.Txn(pb.TxnRequest(success=[put(b"d"), put(b"d")])),
            INVALID,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            lambda: kv.Range(pb.RangeRequest(key=b"a", sort_order=9)),  # type: ignore[arg-type]
            INVALID,
            "etcdserver: invalid sort option",
        ),
        (
            lambda: kv.Range(pb.RangeRequest(key=b"a", revision=before + 5)),
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            lambda: kv.Range(pb.RangeRequest(key=b"a", revision=first.header.revision)),
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            lambda: kv.Compact(pb.CompactionRequest(revision=1)),
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            lambda: kv.Compact(pb.CompactionRequest(revision=before + 1)),
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            lambda: kv.Put(pb.PutRequest(key=b"big", value=b"x" * (2 << 20))),
            INVALID,
            "etcdserver: request is too large",
        ),
        (
            lambda: kv.Put(pb.PutRequest(key=alloc_key(server), value=b"\x01\x02")),
            INVALID,
            "etcdserver: invalid value (alloc_id is an 8-byte big-endian integer)",
        ),
    ]
    for call, code, message in cases:
        await rejected(call(), code, message)
    assert await etcd.revision() == before
    resp = await kv.Range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"))
    assert sorted(kv.key for kv in resp.kvs) == sorted([b"a", alloc_key(server)])


def alloc_key(server: PdServer) -> bytes:
    assert server.node is not None
    return f"/pd/{server.node.cluster_id}/alloc_id".encode()


async def test_lease_and_maintenance_bad_input(etcd: Etcd) -> None:
    granted = await etcd.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=77))
    assert (granted.ID, granted.TTL) == (77, 60)
    await rejected(
        etcd.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60, ID=77)),
        Code.FAILED_PRECONDITION,
        "etcdserver: lease already exists",
    )
    await rejected(
        etcd.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=9_000_000_001)),
        Code.OUT_OF_RANGE,
        "etcdserver: too large lease TTL",
    )
    await rejected(
        etcd.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=78)),
        Code.NOT_FOUND,
        "etcdserver: requested lease not found",
    )
    await rejected(
        etcd.maintenance.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, alarm=pb.NOSPACE)),
        INVALID,
        "kubepd: etcd alarms cannot be set or cleared",
    )
    leases = await etcd.lease.LeaseLeases(pb.LeaseLeasesRequest())
    assert [le.ID for le in leases.leases] == [77]
    ttl = await etcd.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=78))
    assert ttl.TTL == -1  # etcd answers an unknown lease's TTL with -1, not an error
    alarms = await etcd.maintenance.Alarm(pb.AlarmRequest())
    assert list(alarms.alarms) == []


async def test_watch_bad_creates_are_canceled_with_etcds_reasons(etcd: Etcd) -> None:
    call = etcd.watch.Watch()
    try:
        await call.write(
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"b", range_end=b"a"))
        )
        bad = await call.read()
        assert (bad.watch_id, bad.created, bad.canceled) == (-1, True, True)
        assert bad.cancel_reason == "mvcc: watcher range is empty"
        for _ in range(2):
            await call.write(
                pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k", watch_id=3))
            )
        ok, dup = await call.read(), await call.read()
        assert (ok.watch_id, ok.canceled) == (3, False)
        assert (
            dup.canceled
            and dup.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
        )
        await etcd.kv.Put(pb.PutRequest(key=b"k", value=b"1"))
        ev = await call.read()
        assert (ev.watch_id, [e.kv.value for e in ev.events]) == (3, [b"1"])
    finally:
        call.cancel()
