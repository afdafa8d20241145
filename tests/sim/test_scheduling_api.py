"""Schedulers and operators changed at run time through the HTTP API and the CLI, on an
embedded kubepd driving a small simulated fleet."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from pdcore.adapters.clock import ScaledClock
from pdcore.app import PdServer, ServerOptions
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet

pytestmark = pytest.mark.timeout(120)


@dataclass
class Env:
    server: PdServer
    fleet: Fleet
    base: str
    task: asyncio.Task[None]

    def leaders(self) -> dict[int, int]:
        out = dict.fromkeys(self.fleet.stores, 0)
        for r in self.fleet.regions.values():
            out[r.leader_store] += 1
        return out


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ScaledClock(20.0)
    server = PdServer(
        ServerOptions(
            name="api",
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            sched_clock=clock,
        )
    )
    await server.start()
    fleet = Fleet(server.client_address, server.status_address, clock)
    await fleet.bootstrap(zones(3), round_robin(30, 3))

    async def loop() -> None:
        while True:
            await fleet.step()
            await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield Env(server, fleet, f"http://{server.status_address}/pd/api/v1", task)
    finally:
        task.cancel()
        await fleet.close()
        await server.stop(0)


async def until(pred: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_schedulers_added_paused_removed_live(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(env.base + "/schedulers") as r:
            assert set(await r.json()) >= {"balance-leader-scheduler", "balance-region-scheduler"}
        victim = min(env.fleet.stores)
        async with http.post(
            env.base + "/schedulers", json={"name": "evict-leader-scheduler", "store_id": victim}
        ) as r:
            assert r.status == 200, await r.text()
        await until(lambda: env.leaders()[victim] == 0)
        async with http.get(
            env.base + f"/schedulers/diagnostic/evict-leader-scheduler-{victim}"
        ) as r:
            diag = await r.json()
        assert diag["scheduler"] == f"evict-leader-scheduler-{victim}"
        async with http.delete(env.base + f"/schedulers/evict-leader-scheduler-{victim}") as r:
            assert r.status == 200
        # balance-leader brings leaders back once eviction is gone.
        await until(lambda: env.leaders()[victim] >= 2)  # PD tolerates 5 leaders of gap
        cfg_url = env.base + "/scheduler-config/balance-hot-region-scheduler/config"
        async with http.post(cfg_url, json={"write-priorities": ["key"]}) as r:
            assert r.status == 200 and (await r.json())["write-priorities"] == ["key"]
        async with http.post(cfg_url, json={"write-priorities": ["cpu"]}) as r:
            assert r.status == 400 and "write-priorities" in await r.json()
        async with http.post(
            env.base + "/schedulers/balance-leader-scheduler", json={"delay": 600}
        ) as r:
            assert r.status == 200
        async with http.get(env.base + "/schedulers?status=paused") as r:
            assert await r.json() == ["balance-leader-scheduler"]
        for bad, status in [
            ({"name": "no-such-scheduler"}, 400),
            ({"name": "evict-leader-scheduler"}, 400),
            ({"nope": 1}, 400),
        ]:
            async with http.post(env.base + "/schedulers", json=bad) as r:
                assert r.status == status
                assert isinstance(await r.json(), str)


async def test_admin_operator_moves_a_leader(env: Env) -> None:
    region = next(iter(env.fleet.regions.values()))
    target = next(p.store_id for p in region.peers if p.store_id != region.leader_store)
    async with aiohttp.ClientSession() as http:
        body = {"name": "transfer-leader", "region_id": region.id, "to_store_id": target}
        async with http.post(env.base + "/operators", json=body) as r:
            assert r.status == 200, await r.text()
        await until(lambda: region.leader_store == target)
        async with http.get(env.base + f"/operators/{region.id}") as r:
            op = await r.json()
        assert op["desc"] == "transfer-leader"
        await until(lambda: env.server.node.scheduling.get_operator(region.id).status == 0)  # type: ignore[union-attr]
        bad = {"name": "transfer-leader", "region_id": region.id, "to_store_id": 987654}
        async with http.post(env.base + "/operators", json=bad) as r:
            assert r.status == 400 and "known store" in await r.json()


async def test_cli_why_explains_an_idle_scheduler(env: Env) -> None:
    await asyncio.sleep(1.0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pdcore.cli.main",
        "scheduler",
        "why",
        "balance-region-scheduler",
        "--pd",
        env.server.status_address,
        "--json",
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    data = json.loads(out)
    assert proc.returncode == 0 and data["scheduler"] == "balance-region-scheduler"
    assert data["scheduled"] == 0 and "balanced" in data["summary"]
