"""HTTP API writes when TLS does not identify the client: read-only mode refuses every
write (403), a token mode needs the bearer token (401 without it); reads stay open and
refused writes change nothing."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pdcore.adapters.http.access import ApiAccess
from pdcore.app import PdServer, ServerOptions
from pdcore.cli import serve


async def server_with(access: ApiAccess) -> PdServer:
    server = PdServer(
        ServerOptions(
            client_urls=["http://127.0.0.1:0"], status_addr="127.0.0.1:0", api_access=access
        )
    )
    await server.start()
    return server


@pytest.fixture
async def read_only() -> AsyncIterator[PdServer]:
    server = await server_with(ApiAccess(read_only=True))
    yield server
    await server.stop(0)


@pytest.fixture
async def with_token() -> AsyncIterator[PdServer]:
    server = await server_with(ApiAccess(token="s3cret"))
    yield server
    await server.stop(0)


async def request(
    server: PdServer, method: str, path: str, body: object = None, token: str = ""
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"http://{server.status_address}/pd/api/v1{path}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=headers) as r,
    ):
        return r.status, await r.text()


async def test_read_only_refuses_every_write(read_only: PdServer) -> None:
    assert (await request(read_only, "GET", "/config/replicate"))[0] == 200
    for path, body in [
        ("/config/replicate", {"max-replicas": 5}),
        ("/schedulers", {"name": "balance-leader-scheduler"}),
        ("/policies", {"name": "p"}),
    ]:
        status, text = await request(read_only, "POST", path, body)
        assert status == 403 and "read-only" in text, (path, status, text)
    assert (await request(read_only, "DELETE", "/schedulers/balance-region-scheduler"))[0] == 403
    assert read_only.node is not None and read_only.node.config.replication.max_replicas == 3


async def test_writes_need_the_token(with_token: PdServer) -> None:
    assert (await request(with_token, "GET", "/config/replicate"))[0] == 200
    for token in ("", "wrong"):
        status, text = await request(
            with_token, "POST", "/config/replicate", {"max-replicas": 5}, token
        )
        assert status == 401 and "API token" in text
    assert with_token.node is not None and with_token.node.config.replication.max_replicas == 3
    status, _ = await request(
        with_token, "POST", "/config/replicate", {"max-replicas": 5}, "s3cret"
    )
    assert status == 200 and with_token.node.config.replication.max_replicas == 5


async def test_the_scheduler_cli_sends_the_token_from_the_environment(
    with_token: PdServer,
) -> None:
    def cli(token: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBEPD_API_TOKEN"}
        if token is not None:
            env["KUBEPD_API_TOKEN"] = token
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pdcore.cli.main",
                "scheduler",
                "remove",
                "balance-region-scheduler",
                "--pd",
                with_token.status_address,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )

    # The server runs on this event loop: the CLI process must not block it.
    refused = await asyncio.to_thread(cli, None)
    assert refused.returncode != 0 and "API token" in refused.stdout + refused.stderr
    assert (await asyncio.to_thread(cli, "s3cret")).returncode == 0


def test_serve_reads_the_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    access = serve.access_of(argparse.Namespace(api_read_only=False, api_token_file=str(token)))
    assert access == ApiAccess(read_only=False, token="abc")
    token.write_text("")
    with pytest.raises(SystemExit, match="is empty"):
        serve.access_of(argparse.Namespace(api_read_only=False, api_token_file=str(token)))
