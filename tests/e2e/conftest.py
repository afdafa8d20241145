from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pdcore.app import PdServer, ServerOptions
from tests.support.pdclient import PdTestClient


@contextlib.asynccontextmanager
async def running_server(tmp_path: Path, **options: Any) -> AsyncIterator[PdServer]:
    """An embedded kubepd on loopback ports, stopped on exit."""
    srv = PdServer(
        ServerOptions(
            data_dir=tmp_path / "pd",
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            **options,
        )
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PdServer]:
    async with running_server(tmp_path, name="pd-e2e", max_message_bytes=1 << 20) as srv:
        yield srv


@pytest.fixture
async def client(server: PdServer) -> AsyncIterator[PdTestClient]:
    c = PdTestClient(server.client_address)
    await c.connect()
    try:
        yield c
    finally:
        await c.channel.close()
