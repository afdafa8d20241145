"""Bad gRPC requests get PD's errors (or INVALID_ARGUMENT) with a message, change
nothing, and are logged once per kind — not `UNKNOWN: Unexpected ...` with a traceback."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest

from pdcore.adapters.storage.local import LocalStore
from pdcore.app import PdServer
from pdcore.proto import metapb_pb2, pdpb_pb2
from tests.support.pdclient import PdTestClient, one_by_one


def error_of(resp: object) -> tuple[int, str]:
    header = resp.header  # type: ignore[attr-defined]
    return int(header.error.type), str(header.error.message)


async def store_ids(client: PdTestClient) -> set[int]:
    resp = await client.stub.GetAllStores(pdpb_pb2.GetAllStoresRequest(header=client.header()))
    assert not resp.header.HasField("error")
    return {s.id for s in resp.stores}


async def test_unknown_enums_in_put_store_and_bootstrap(client: PdTestClient) -> None:
    store = metapb_pb2.Store(id=7, address="127.0.0.1:20160", version="8.5.0")
    store.node_state = 9  # type: ignore[assignment]
    resp = await client.stub.Bootstrap(
        pdpb_pb2.BootstrapRequest(
            header=client.header(),
            store=store,
            region=metapb_pb2.Region(id=8, peers=[metapb_pb2.Peer(id=9, store_id=7)]),
        )
    )
    assert error_of(resp) == (pdpb_pb2.INVALID_VALUE, "invalid request: unknown node state 9")
    assert not (
        await client.stub.IsBootstrapped(pdpb_pb2.IsBootstrappedRequest(header=client.header()))
    ).bootstrapped
    await client.bootstrap()
    bad = metapb_pb2.Store(id=50, address="127.0.0.1:20170", version="8.5.0")
    bad.state = 7  # type: ignore[assignment]
    resp = await client.stub.PutStore(pdpb_pb2.PutStoreRequest(header=client.header(), store=bad))
    assert error_of(resp) == (pdpb_pb2.INVALID_VALUE, "invalid request: unknown store state 7")
    assert 50 not in await store_ids(client)


async def test_oversize_store_metadata_is_refused(client: PdTestClient) -> None:
    await client.bootstrap()
    resp = await client.put_store(60, "h" * 5000 + ":1")
    assert error_of(resp)[0] == pdpb_pb2.INVALID_VALUE and "address is longer" in error_of(resp)[1]
    resp = await client.put_store(61, "127.0.0.1:1", **{f"k{i}": "v" for i in range(40)})
    assert "more than 32 labels" in error_of(resp)[1]
    assert {60, 61}.isdisjoint(await store_ids(client))


async def test_bad_region_heartbeats_are_answered_and_the_stream_goes_on(
    server: PdServer, client: PdTestClient
) -> None:
    store_id, region_id, peer_id = await client.bootstrap()
    p1 = metapb_pb2.Peer(id=peer_id, store_id=store_id)
    bad_role = metapb_pb2.Peer(id=peer_id, store_id=store_id)
    bad_role.role = 9  # type: ignore[assignment]
    top = (1 << 64) - 1
    reqs = [
        client.heartbeat(
            metapb_pb2.Region(
                id=region_id,
                region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
                peers=[bad_role],
            ),
            p1,
        ),
        client.heartbeat(  # two peers sharing one peer id
            metapb_pb2.Region(
                id=region_id,
                region_epoch=metapb_pb2.RegionEpoch(conf_ver=2, version=1),
                peers=[p1, metapb_pb2.Peer(id=peer_id, store_id=store_id + 1000)],
            ),
            p1,
        ),
        client.heartbeat(  # an epoch no real region reaches
            metapb_pb2.Region(
                id=region_id,
                region_epoch=metapb_pb2.RegionEpoch(conf_ver=top, version=top),
                peers=[p1],
            ),
            p1,
        ),
        client.heartbeat(  # a real change after all that is still accepted
            metapb_pb2.Region(
                id=region_id, region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=2), peers=[p1]
            ),
            p1,
        ),
    ]
    call = client.stub.RegionHeartbeat(one_by_one(*reqs))
    errors = []
    for _ in range(3):
        resp = await call.read()
        errors.append(error_of(resp)[1])
    assert "unknown peer role 9" in errors[0]
    assert f"two peers with id {peer_id}" in errors[1]
    assert "is beyond any real region" in errors[2]
    node = server.node
    assert node is not None
    deadline = time.monotonic() + 5
    while node.tree.get(region_id).epoch.version != 2:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the good heartbeat was not taken"
        await asyncio.sleep(0.02)
    region = node.tree.get(region_id)
    assert region is not None and region.epoch.conf_ver == 1 and len(region.peers) == 1
    call.cancel()


async def test_undecodable_requests_are_invalid_argument_and_logged_once(
    server: PdServer, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\xff\xff\xff\xff\x0f not a protobuf message"
    async with grpc.aio.insecure_channel(server.client_address) as ch:
        for method in ("PutStore", "AllocID", "Bootstrap"):
            rpc = ch.unary_unary(
                f"/pdpb.PD/{method}",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            with caplog.at_level(logging.WARNING):
                for _ in range(20):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await rpc(garbage, timeout=5)
                    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert "cannot decode" in (e.value.details() or "")
        tso = ch.stream_stream(
            "/pdpb.PD/Tso", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        call = tso()
        await call.write(garbage)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call.read()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    undecodable = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(undecodable) == 4  # one per method, not one per request
    assert not any(r.exc_info for r in caplog.records)
    assert not any("Unexpected" in r.getMessage() for r in caplog.records)


async def test_a_full_disk_is_a_pd_error_and_changes_nothing(
    server: PdServer, client: PdTestClient
) -> None:
    await client.bootstrap()
    local = server.store
    assert isinstance(local, LocalStore)
    pages = local._db.execute("PRAGMA page_count").fetchone()[0]
    local._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full
    message = ""
    for sid in range(100, 400):
        resp = await client.put_store(sid, f"127.0.0.1:{sid}", zone="z" * 200)
        if resp.header.HasField("error"):
            message, failed = resp.header.error.message, sid
            break
    assert "database or disk is full" in message and "Unexpected" not in message
    assert failed not in await store_ids(client)  # not half-applied in memory either
    local._db.execute("PRAGMA max_page_count = 1073741823")
    assert not (await client.put_store(failed, f"127.0.0.1:{failed}")).header.HasField("error")
    assert Path(local.path).exists()
