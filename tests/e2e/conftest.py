from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pdcore.app import PdServer, ServerOptions
from tests.support.pdclient import PdTestClient


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PdServer]:
    srv = PdServer(
        ServerOptions(
            name="pd-e2e",
            data_dir=tmp_path / "pd",
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            max_message_bytes=1 << 20,
        )
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


@pytest.fixture
async def client(server: PdServer) -> AsyncIterator[PdTestClient]:
    c = PdTestClient(server.client_address)
    await c.connect()
    try:
        yield c
    finally:
        await c.channel.close()
