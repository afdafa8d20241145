"""Keyspaces over the wire: `keyspacepb.Keyspace` and PD's HTTP keyspace API on the
client port, DEFAULT from the start, ids never reused, durable across a restart, and
bad input answered with a reason and no change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from pdcore.app import PdServer, ServerOptions
from pdcore.proto import keyspacepb_pb2, keyspacepb_pb2_grpc, pdpb_pb2

ENTRY_NOT_FOUND, INVALID_VALUE = 9, 10


def options(data_dir: Path) -> ServerOptions:
    return ServerOptions(
        name="pd-ks",
        data_dir=data_dir,
        client_urls=["http://127.0.0.1:0"],
        status_addr="127.0.0.1:0",
        enable_scheduling=False,
    )


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as r:
        return r.status, await r.json()


async def test_keyspaces_over_grpc_and_http_survive_a_restart(tmp_path: Path) -> None:
    srv = PdServer(options(tmp_path / "pd"))
    await srv.start()
    base = f"http://{srv.client_address}/pd/api/v2/keyspaces"
    async with aiohttp.ClientSession() as http:
        st, default = await call(http, "GET", base + "/DEFAULT")
        assert st == 200 and (default["id"], default["state"]) == (0, "ENABLED")
        st, a = await call(http, "POST", base, {"name": "tenant_a", "config": {"k": "v"}})
        assert st == 200 and a["id"] == 1 and a["config"] == {"k": "v"}
        st, b = await call(http, "POST", base, {"name": "tenant-b"})
        assert st == 200 and b["id"] == 2
        st, a = await call(
            http, "PATCH", base + "/tenant_a/config", {"config": {"k": None, "x": "1"}}
        )
        assert st == 200 and a["config"] == {"x": "1"}
        st, b = await call(http, "PUT", base + "/tenant-b/state", {"state": "disabled"})
        assert st == 200 and b["state"] == "DISABLED" and b["state_changed_at"] > 0
        st, page = await call(http, "GET", base + "?limit=2")
        assert [k["name"] for k in page["keyspaces"]] == ["DEFAULT", "tenant_a"]
        assert page["next_page_token"] == "2"
        st, page = await call(http, "GET", base + "?limit=2&page_token=2")
        assert [k["id"] for k in page["keyspaces"]] == [2] and page["next_page_token"] == ""
        st, by_id = await call(http, "GET", base + "/id/1")
        assert st == 200 and by_id["name"] == "tenant_a"
    cid = srv.node.cluster_id  # type: ignore[union-attr]
    await srv.stop(0)

    srv = PdServer(options(tmp_path / "pd"))
    await srv.start()
    try:
        h = pdpb_pb2.RequestHeader(cluster_id=cid)
        async with grpc.aio.insecure_channel(srv.client_address) as ch:
            stub = keyspacepb_pb2_grpc.KeyspaceStub(ch)
            got = await stub.LoadKeyspace(
                keyspacepb_pb2.LoadKeyspaceRequest(header=h, name="tenant_a")
            )
            assert not got.header.HasField("error")
            assert (got.keyspace.id, dict(got.keyspace.config)) == (1, {"x": "1"})
            every = await stub.GetAllKeyspaces(keyspacepb_pb2.GetAllKeyspacesRequest(header=h))
            assert [(k.id, k.state) for k in every.keyspaces] == [(0, 0), (1, 0), (2, 1)]
            watch = stub.WatchKeyspaces(keyspacepb_pb2.WatchKeyspacesRequest(header=h))
            first = await asyncio.wait_for(watch.read(), 10)
            assert [k.name for k in first.keyspaces] == ["DEFAULT", "tenant_a", "tenant-b"]
            up = await stub.UpdateKeyspaceState(
                keyspacepb_pb2.UpdateKeyspaceStateRequest(
                    header=h, id=2, state=keyspacepb_pb2.ARCHIVED
                )
            )
            assert up.keyspace.state == keyspacepb_pb2.ARCHIVED
            change = await asyncio.wait_for(watch.read(), 10)
            assert [(k.id, k.state) for k in change.keyspaces] == [(2, keyspacepb_pb2.ARCHIVED)]
            watch.cancel()
        async with aiohttp.ClientSession() as http:
            base = f"http://{srv.client_address}/pd/api/v2/keyspaces"
            st, c = await call(http, "POST", base, {"name": "tenant_c"})
            assert st == 200 and c["id"] == 3  # after a restart, no id is handed out again
    finally:
        await srv.stop(0)


@pytest.fixture
async def pd(tmp_path: Path) -> Any:
    srv = PdServer(options(tmp_path / "pd"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


# Status codes as PD answers them: 400 when the request does not bind to its parameter
# types, 500 with the reason for what the keyspace manager refuses.
BAD_HTTP = [
    ("POST", "", {"name": "has space"}, 500, "illegal keyspace name"),
    ("POST", "", {"name": ""}, 500, "illegal keyspace name"),
    ("POST", "", {"name": "x" * 65}, 500, "illegal keyspace name"),
    ("POST", "", {"name": 7}, 400, "name must be a string"),
    ("POST", "", {"name": "ok", "config": {"k": 1}}, 400, "must map strings to strings"),
    ("POST", "", [1, 2], 400, "body must be a JSON object"),
    ("POST", "", {"name": "DEFAULT"}, 500, "already exists"),
    ("GET", "/nope", None, 500, "does not exist"),
    ("GET", "/id/abc", None, 500, "invalid keyspace id"),
    ("GET", "/id/77", None, 500, "does not exist"),
    ("GET", "?limit=-1", None, 400, "limit must be an integer"),
    ("GET", "?page_token=x", None, 400, "page_token must be an integer"),
    ("PUT", "/DEFAULT/state", {"state": "disabled"}, 500, "DEFAULT keyspace"),
    ("PUT", "/t/state", {"state": "archived"}, 500, "cannot go from ENABLED to ARCHIVED"),
    ("PUT", "/t/state", {"state": "gone"}, 400, "illegal keyspace state"),
    ("PATCH", "/t/config", {"config": "x"}, 400, "must map strings to strings or null"),
    ("PATCH", "/nope/config", {"config": {}}, 500, "does not exist"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_HTTP)
async def test_bad_http_input_is_refused_and_changes_nothing(
    pd: PdServer, method: str, path: str, body: Any, status: int, message: str
) -> None:
    base = f"http://{pd.client_address}/pd/api/v2/keyspaces"
    async with aiohttp.ClientSession() as http:
        st, t = await call(http, "POST", base, {"name": "t", "config": {"a": "b"}})
        assert st == 200
        before = await call(http, "GET", base)
        st, reply = await call(http, method, base + path, body)
        assert (st, message in reply) == (status, True), reply
        assert await call(http, "GET", base) == before
        st, again = await call(http, "POST", base, {"name": "t2"})
        assert again["id"] == t["id"] + 1  # a refused create used no id


async def test_bad_grpc_input_is_refused_and_changes_nothing(pd: PdServer) -> None:
    h = pdpb_pb2.RequestHeader(cluster_id=pd.node.cluster_id)  # type: ignore[union-attr]
    async with grpc.aio.insecure_channel(pd.client_address) as ch:
        stub = keyspacepb_pb2_grpc.KeyspaceStub(ch)
        miss = await stub.LoadKeyspace(keyspacepb_pb2.LoadKeyspaceRequest(header=h, name="nope"))
        assert (
            miss.header.error.type == ENTRY_NOT_FOUND
            and "does not exist" in miss.header.error.message
        )
        bad = await stub.UpdateKeyspaceState(
            keyspacepb_pb2.UpdateKeyspaceStateRequest(header=h, id=0, state=7)  # type: ignore[arg-type]
        )
        assert bad.header.error.type == INVALID_VALUE
        frozen = await stub.UpdateKeyspaceState(
            keyspacepb_pb2.UpdateKeyspaceStateRequest(header=h, id=0, state=keyspacepb_pb2.DISABLED)
        )
        assert frozen.header.error.type == INVALID_VALUE
        gone = await stub.UpdateKeyspaceState(
            keyspacepb_pb2.UpdateKeyspaceStateRequest(
                header=h, id=99, state=keyspacepb_pb2.DISABLED
            )
        )
        assert gone.header.error.type == ENTRY_NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetAllKeyspaces(
                keyspacepb_pb2.GetAllKeyspacesRequest(header=pdpb_pb2.RequestHeader(cluster_id=1))
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        every = await stub.GetAllKeyspaces(keyspacepb_pb2.GetAllKeyspacesRequest(header=h))
        assert [(k.id, k.state) for k in every.keyspaces] == [(0, keyspacepb_pb2.ENABLED)]
