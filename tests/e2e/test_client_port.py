"""One client port, two protocols: PD's HTTP API (HTTP/1.1) and gRPC (HTTP/2) on the
client URL, as PD serves both on 2379; and the standard gRPC health service."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdcore.app import PdServer, ServerOptions
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.e2e.conftest import running_server
from tests.support.pdclient import PdTestClient

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_http_api_and_grpc_share_the_client_port(
    server: PdServer, client: PdTestClient
) -> None:
    url = f"http://{server.client_address}/pd/api/v1"
    async with aiohttp.ClientSession() as http:
        # Two requests on one kept-alive connection, with a gRPC call in between.
        async with http.get(url + "/members") as r:
            assert r.status == 200
            members = await r.json()
        grpc_members = await client.stub.GetMembers(pdpb_pb2.GetMembersRequest())
        async with http.get(url + "/leader") as r:
            assert r.status == 200 and (await r.json())["name"] == "pd-e2e"
        async with http.get(url + "/store/12345") as r:
            # PD's answers, on this port too: before bootstrap, PD's 500 and its message.
            assert r.status == 500 and "not bootstrapped" in await r.json()
        async with http.post(url + "/config", data=b"{not json") as r:
            assert r.status == 400
    assert members["header"]["cluster_id"] == grpc_members.header.cluster_id != 0
    front = server._grpc.front  # type: ignore[union-attr]
    assert front is not None and front.http == 1 and front.spliced >= 1


async def test_bad_bytes_on_the_client_port_change_nothing(
    server: PdServer, client: PdTestClient
) -> None:
    host, port = server.client_address.rsplit(":", 1)
    # Not HTTP at all: the HTTP side answers 400 and closes.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x01\x02\x03 nonsense\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    assert b" 400 Bad Request" in reply.split(b"\r\n", 1)[0], reply[:80]
    writer.close()
    # Half an HTTP/2 preface, then gone; and a connection that never says anything.
    _, w1 = await asyncio.open_connection(host, int(port))
    w1.write(b"PR")
    await w1.drain()
    w1.close()
    _, idle = await asyncio.open_connection(host, int(port))
    # A broken HTTP/2 connection (preface, then garbage frames) ends only itself.
    r2, w2 = await asyncio.open_connection(host, int(port))
    w2.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64)
    await w2.drain()
    assert await asyncio.wait_for(r2.read(), 10) is not None  # closed by gRPC
    w2.close()
    resp = await client.stub.GetMembers(pdpb_pb2.GetMembersRequest())
    assert resp.header.cluster_id == server.node.cluster_id  # type: ignore[union-attr]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{server.client_address}/pd/api/v1/leader") as r,
    ):
        assert r.status == 200
    idle.close()


async def test_client_port_http_off_leaves_the_port_to_grpc(tmp_path: Path) -> None:
    srv = PdServer(
        ServerOptions(
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            http_on_client_port=False,
        )
    )
    await srv.start()
    try:
        assert srv._grpc is not None and srv._grpc.front is None
        async with grpc.aio.insecure_channel(srv.client_address) as ch:
            await pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest())
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                await http.get(f"http://{srv.client_address}/pd/api/v1/members")
            async with http.get(f"http://{srv.status_address}/pd/api/v1/members") as r:
                assert r.status == 200
    finally:
        await srv.stop(0)


@pytest.fixture
async def health(server: PdServer) -> AsyncIterator[health_pb2_grpc.HealthStub]:
    async with grpc.aio.insecure_channel(server.client_address) as ch:
        yield health_pb2_grpc.HealthStub(ch)


async def test_health_check_is_serving_for_the_server_and_each_service(
    health: health_pb2_grpc.HealthStub,
) -> None:
    for service in ("", "pdpb.PD", "meta_storagepb.MetaStorage"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_goes_not_serving_when_shutdown_begins(
    server: PdServer, health: health_pb2_grpc.HealthStub
) -> None:
    watch = health.Watch(health_pb2.HealthCheckRequest(service="pdpb.PD"))
    assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
    stopping = asyncio.get_running_loop().create_task(server.stop(2.0))
    try:
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
    finally:
        watch.cancel()
        await stopping


async def test_large_messages_cross_the_splice_intact(client: PdTestClient) -> None:
    """Messages far larger than one read, both ways, many at once: every byte arrives
    (the splice reuses its read buffer only when the peer took everything)."""
    blobs = {f"blob-{i}": bytes([i]) * (700 << 10) + i.to_bytes(2, "big") for i in range(6)}
    await asyncio.gather(
        *(
            client.stub.StoreGlobalConfig(
                pdpb_pb2.StoreGlobalConfigRequest(
                    config_path="/global/config",
                    changes=[pdpb_pb2.GlobalConfigItem(name=name, payload=blob)],
                )
            )
            for name, blob in blobs.items()
        )
    )
    loaded = await asyncio.gather(
        *(
            client.stub.LoadGlobalConfig(
                pdpb_pb2.LoadGlobalConfigRequest(config_path="/global/config", names=[name])
            )
            for name in blobs
        )
    )
    assert {r.items[0].name: r.items[0].payload for r in loaded} == blobs


def _splice_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("client-port-splice")]


async def test_stopping_ends_spliced_connections_and_their_threads(tmp_path: Path) -> None:
    """A gRPC connection spliced in threads: a client that keeps its connection open does
    not keep the server's threads alive past stop(), and it sees the connection end."""
    before = set(_splice_threads())
    async with running_server(tmp_path) as srv:
        host, port = srv.client_address.rsplit(":", 1)
        async with grpc.aio.insecure_channel(srv.client_address) as ch:
            await pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest())
            # A raw HTTP/2 connection that never finishes its handshake, held open.
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert await asyncio.wait_for(reader.read(9), 10)  # gRPC's SETTINGS: spliced
            front = srv._grpc.front  # type: ignore[union-attr]
            assert front is not None and front.spliced == 2
            assert len(set(_splice_threads()) - before) == 4  # two per connection
            await srv.stop(0)
            while await asyncio.wait_for(reader.read(1 << 16), 10):
                pass  # until the end of the connection
            # The client has not closed its side: stop() itself ended the threads.
            left = set(_splice_threads()) - before
            for t in left:
                await asyncio.to_thread(t.join, 10)
            assert not [t for t in left if t.is_alive()]
            writer.close()
    assert not front._spliced
