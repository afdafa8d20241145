"""Bad HTTP bodies on a running kubepd: 400 with a message, nothing changed."""

from __future__ import annotations

import aiohttp

from pdcore.app import PdServer


async def post(server: PdServer, path: str, body: bytes) -> tuple[int, str]:
    url = f"http://{server.status_address}/pd/api/v1{path}"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=body, headers={"Content-Type": "application/json"}) as r,
    ):
        return r.status, await r.text()


async def test_zero_max_replicas_is_a_400_and_is_not_saved(server: PdServer) -> None:
    status, text = await post(server, "/config/replicate", b'{"max-replicas": 0}')
    assert status == 400 and "max-replicas must be at least 1" in text
    assert server.node is not None and server.node.config.replication.max_replicas == 3
    assert (await server.store.load()).config is None


async def test_unreadable_bodies_are_400_not_500(server: PdServer) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/config/schedule", "/config/replicate", "/schedulers", "/operators"):
        status, text = await post(server, path, deep)
        assert status == 400, (path, status, text)
        status, text = await post(server, path, b'{"max-replicas": "\xff\xfe"}')
        assert status == 400 and "UTF-8" in text, (path, status, text)
    assert server.node is not None and server.node.config.replication.max_replicas == 3
