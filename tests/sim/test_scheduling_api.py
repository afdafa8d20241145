"""Schedulers and operators changed at run time through the HTTP API and the CLI, on an
embedded kubepd driving a small simulated fleet — on virtual time, with real gRPC and
HTTP (the clock is held while a request is in flight)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pdcore.app import PdServer
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from pdsim.runner import TICK_S
from pdsim.world import World, WorldOptions
from tests.support.virtual import held, held_http, on_virtual_time, until

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


@contextlib.asynccontextmanager
async def open_env() -> AsyncIterator[Env]:
    world = World(WorldOptions(name="api", transport="grpc"))
    fleet = await world.start()
    server = world.server
    assert server is not None
    await fleet.bootstrap(zones(3), round_robin(30, 3))

    async def loop() -> None:
        while True:
            await fleet.step()
            await world.clock.sleep(TICK_S)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield Env(server, fleet, f"http://{server.status_address}/pd/api/v1", task)
    finally:
        task.cancel()
        await world.close()


@on_virtual_time
async def test_schedulers_added_paused_removed_live() -> None:
    async with open_env() as env, held_http() as http:
        async with http.get(env.base + "/schedulers") as r:
            assert set(await r.json()) >= {"balance-leader-scheduler", "balance-region-scheduler"}
        victim = min(env.fleet.stores)
        async with http.post(
            env.base + "/schedulers", json={"name": "evict-leader-scheduler", "store_id": victim}
        ) as r:
            assert r.status == 200, await r.text()
        await until(lambda: env.leaders()[victim] == 0, 300)
        async with http.get(
            env.base + f"/schedulers/diagnostic/evict-leader-scheduler-{victim}"
        ) as r:
            diag = await r.json()
        assert diag["scheduler"] == f"evict-leader-scheduler-{victim}"
        async with http.delete(env.base + f"/schedulers/evict-leader-scheduler-{victim}") as r:
            assert r.status == 200
        # balance-leader brings leaders back once eviction is gone.
        await until(lambda: env.leaders()[victim] >= 2, 300)  # PD tolerates 5 leaders of gap
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


@on_virtual_time
async def test_admin_operator_moves_a_leader() -> None:
    async with open_env() as env, held_http() as http:
        region = next(iter(env.fleet.regions.values()))
        target = next(p.store_id for p in region.peers if p.store_id != region.leader_store)
        # Over real gRPC, PD may not have the region's first heartbeat yet.
        tree = env.server.node.tree  # type: ignore[union-attr]
        await until(
            lambda: (pr := tree.get(region.id)) is not None and bool(pr.peer_on(target)), 60
        )
        body = {"name": "transfer-leader", "region_id": region.id, "to_store_id": target}
        async with http.post(env.base + "/operators", json=body) as r:
            assert r.status == 200, await r.text()
        await until(lambda: region.leader_store == target, 60)
        async with http.get(env.base + f"/operators/{region.id}") as r:
            op = await r.json()
        assert op["desc"] == "transfer-leader"
        await until(lambda: env.server.node.scheduling.get_operator(region.id).status == 0, 60)  # type: ignore[union-attr]
        bad = {"name": "transfer-leader", "region_id": region.id, "to_store_id": 987654}
        async with http.post(env.base + "/operators", json=bad) as r:
            assert r.status == 400 and "known store" in await r.json()


@on_virtual_time
async def test_cli_why_explains_an_idle_scheduler() -> None:
    async with open_env() as env:
        await asyncio.sleep(10.0)  # simulated: the schedulers have run and found nothing
        out, code = await held(_why(env))
    data = json.loads(out)
    assert code == 0 and data["scheduler"] == "balance-region-scheduler"
    assert data["scheduled"] == 0 and "balanced" in data["summary"]


async def _why(env: Env) -> tuple[bytes, int | None]:
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
    return out, proc.returncode
