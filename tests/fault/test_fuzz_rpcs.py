"""Random bytes, random well-formed messages and byte-mutated messages against every
RPC of `pdpb.PD`, on a bootstrapped kubepd: every request that is refused (a gRPC
status or a header error) must leave the cluster's state exactly as it was, nothing
may reach grpc's "Unexpected ... raised by servicer" path, nothing may log a
traceback, and the server must still serve afterwards. KUBEPD_FUZZ_ROUNDS sets the
messages per RPC and kind; KUBEPD_FAULT_SEED makes a run repeatable."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message

from pdcore.app import PdServer, ServerOptions
from pdcore.proto import pdpb_pb2
from pdcore.service.node import PdNode
from tests.fault.sizes import FUZZ_ROUNDS, SEED
from tests.support.pdclient import PdTestClient

pytestmark = pytest.mark.timeout(600)
SERVICE = pdpb_pb2.DESCRIPTOR.services_by_name["PD"]
STREAM_WAIT_S = 0.2
INTS = [0, 1, 2, 3, 4, 5, 7, 1000, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1]
STRINGS = ["", "a", "127.0.0.1:20160", "8.5.0", "/global/config", "x" * 3000, "é\x00"]
RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def message_class(desc: Descriptor) -> type[Message]:
    module = {"pdpb": pdpb_pb2}.get(desc.file.package)
    if module is None:
        from google.protobuf import message_factory

        return message_factory.GetMessageClass(desc)
    return getattr(module, desc.name)  # type: ignore[no-any-return]


def scalar(f: FieldDescriptor, rng: random.Random) -> Any:
    if f.type == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if f.type == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in f.enum_type.values] + [99])
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, 0.5, 1e30, math.inf, math.nan])
    if f.type == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"a", b"t\x00\x00", rng.randbytes(rng.randint(1, 64))])
    lo, hi = RANGES[f.type]
    pick = rng.choice([*INTS, -1, -(2**31)])
    return pick if lo <= pick <= hi else rng.randint(max(lo, 0), min(hi, 1 << 20))


def fill(msg: Message, rng: random.Random, cluster_id: int, depth: int = 0) -> Message:
    for f in msg.DESCRIPTOR.fields:
        if f.name == "header" and f.message_type.name == "RequestHeader":
            if rng.random() < 0.85:
                msg.header.cluster_id = cluster_id  # type: ignore[attr-defined]
            continue
        if rng.random() < 0.4:
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or f.message_type.GetOptions().map_entry:
                continue
            if f.is_repeated:
                for _ in range(rng.randint(0, 3)):
                    fill(getattr(msg, f.name).add(), rng, cluster_id, depth + 1)
            else:
                fill(getattr(msg, f.name), rng, cluster_id, depth + 1)
        elif f.is_repeated:
            getattr(msg, f.name).extend(scalar(f, rng) for _ in range(rng.randint(0, 3)))
        else:
            setattr(msg, f.name, scalar(f, rng))
    return msg


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data or b"\x00")
    for _ in range(rng.randint(1, 4)):
        op, i = rng.random(), rng.randrange(len(buf))
        if op < 0.4:
            buf[i] = rng.randrange(256)
        elif op < 0.7:
            buf.insert(i, rng.randrange(256))
        elif len(buf) > 1:
            del buf[i]
    return bytes(buf)


def snapshot(node: PdNode) -> Any:
    """Everything a refused request must not change."""
    return (
        sorted(node.stores(), key=lambda s: s.id),
        sorted(
            ((r.id, r.start_key, r.end_key, r.epoch, r.peers, r.leader) for r in node.tree),
            key=lambda t: t[0],
        ),
        node.cluster,
        node.gc.safe_point,
        sorted(node.gc.services.items()),
        node.config,
        sorted(node.global_config.items()),
        (node.ids.base, node.ids.end),
        sorted(node.min_resolved_ts.items()),
    )


def refused(resp_bytes: bytes, method: MethodDescriptor) -> bool:
    try:
        resp = message_class(method.output_type).FromString(resp_bytes)
    except DecodeError:
        return False
    fields = resp.DESCRIPTOR.fields_by_name
    if "header" in fields and resp.header.HasField("error"):  # type: ignore[attr-defined]
        return bool(resp.header.error.type)  # type: ignore[attr-defined]
    if "error" in fields and resp.HasField("error"):
        return bool(resp.error.type)  # type: ignore[attr-defined]
    return False


async def call(ch: grpc.aio.Channel, method: MethodDescriptor, body: bytes) -> bool | None:
    """Send one message; True if it was refused, False if accepted, None if unknown
    (a stream that answered nothing in time)."""
    path = f"/pdpb.PD/{method.name}"
    ident = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if not method.client_streaming and not method.server_streaming:
            return refused(await ch.unary_unary(path, **ident)(body, timeout=5), method)
        if method.client_streaming and not method.server_streaming:
            return refused(await ch.stream_unary(path, **ident)(one(body), timeout=5), method)
        if method.client_streaming:
            stream: Any = ch.stream_stream(path, **ident)(one(body, linger=True))
        else:
            stream = ch.unary_stream(path, **ident)(body)
        try:
            first = await asyncio.wait_for(stream.read(), STREAM_WAIT_S)
        except TimeoutError:
            return None
        finally:
            stream.cancel()
        return None if first is grpc.aio.EOF else refused(first, method)
    except grpc.aio.AioRpcError:
        return True


async def one(body: bytes, linger: bool = False) -> AsyncIterator[bytes]:
    yield body
    if linger:
        await asyncio.sleep(STREAM_WAIT_S * 2)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[PdServer]:
    server = PdServer(
        ServerOptions(
            data_dir=tmp_path / "pd",
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            enable_scheduling=False,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def test_bad_messages_to_every_rpc_change_nothing(
    cluster: PdServer, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    node = cluster.node
    assert node is not None
    client = PdTestClient(cluster.client_address)
    cid = await client.connect()
    await client.bootstrap()
    counts = {"sent": 0, "refused": 0, "accepted": 0, "unknown": 0}
    broken: list[str] = []
    with caplog.at_level(logging.INFO):
        async with grpc.aio.insecure_channel(cluster.client_address) as ch:
            for method in SERVICE.methods:
                cls = message_class(method.input_type)
                streaming = method.client_streaming or method.server_streaming
                rounds = max(2, FUZZ_ROUNDS // 3) if streaming else FUZZ_ROUNDS
                for i in range(rounds * 3):
                    if i % 3 == 0:
                        body = rng.randbytes(rng.randint(0, 200))
                    else:
                        body = fill(cls(), rng, cid).SerializeToString()
                        if i % 3 == 2:
                            body = mutate(body, rng)
                    before = snapshot(node)
                    verdict = await call(ch, method, body)
                    counts["sent"] += 1
                    key = {True: "refused", False: "accepted", None: "unknown"}[verdict]
                    counts[key] += 1
                    if verdict is True and snapshot(node) != before:
                        broken.append(f"{method.name}: {body.hex()[:200]}")
    print(f"fuzz: seed {SEED}, {counts}")
    assert not broken, f"refused requests changed state: {broken[:5]}"
    unexpected = [
        r.getMessage()[:200]
        for r in caplog.records
        if r.exc_info or "Unexpected" in r.getMessage() or r.name.startswith("grpc")
    ]
    assert not unexpected, unexpected[:5]
    assert counts["refused"] > counts["sent"] // 3
    # Still serving.
    assert await client.alloc_id() > 0
    members = await client.stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=5)
    assert members.header.cluster_id == cid
    await client.channel.close()
