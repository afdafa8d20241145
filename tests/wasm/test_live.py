"""Wasm policies added, replaced and removed on a running embedded kubepd while the
simulator runs: effects start and stop without a restart, hostile policies are
contained, and the Wasm balance-leader balances like the built-in one. On virtual time
with real gRPC and HTTP (the clock is held while a request is in flight)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdcore.app import PdServer
from pdsim.cases import zones
from pdsim.fleet import Fleet
from pdsim.runner import TICK_S, distribution, simulate
from pdsim.world import World, WorldOptions
from tests.support.virtual import HeldHttp, held_http, on_virtual_time, until

pytestmark = pytest.mark.timeout(180)


@dataclass
class Env:
    server: PdServer
    fleet: Fleet
    base: str

    def leaders(self) -> list[int]:
        return list(distribution(self.fleet)["leaders"].values())


@contextlib.asynccontextmanager
async def open_env() -> AsyncIterator[Env]:
    world = World(WorldOptions(name="wasm", transport="grpc"))
    fleet = await world.start()
    server = world.server
    assert server is not None and server.node is not None
    # Store 4 also holds more peers than the others; balance-region would move some off
    # and their leaders with them. Only a leader policy may move leaders here.
    for name in ("balance-leader-scheduler", "balance-region-scheduler"):
        server.node.scheduling.coordinator.remove_scheduler(name)  # type: ignore[union-attr]
    # 4 stores, every leader on store 4: only a leader balancer can fix it.
    layout = [(3, [3, i % 3, (i + 1) % 3]) for i in range(200)]
    await fleet.bootstrap(zones(4), layout, size_mib=1)

    async def loop() -> None:
        while True:
            await fleet.step()
            await world.clock.sleep(TICK_S)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield Env(server, fleet, f"http://{server.status_address}/pd/api/v1")
    finally:
        task.cancel()
        await world.close()


async def add(
    http: HeldHttp, env: Env, name: str, path: Path, **extra: object
) -> dict[str, object]:
    body = {
        "name": name,
        "module": base64.b64encode(path.read_bytes()).decode(),
        "interval_s": 1.0,
        **extra,
    }
    async with http.post(env.base + "/policies", json=body) as r:
        data = await r.json()
        assert r.status == 200, data
        return data  # type: ignore[no-any-return]


async def status(http: HeldHttp, env: Env, name: str) -> dict[str, object]:
    async with http.get(env.base + f"/policies/{name}") as r:
        return await r.json()  # type: ignore[no-any-return]


@on_virtual_time
async def test_wasm_balance_leader_added_and_removed_live(policies: Path) -> None:
    async with open_env() as env, held_http() as http:
        await asyncio.sleep(60.0)  # simulated
        assert max(env.leaders()) == 200  # nothing balances leaders without a policy
        await add(
            http,
            env,
            "wasm-balance",
            policies / "balance_leader.wasm",
            config={"batch": 4, "tolerance": 2},
        )
        # Balanced within the policy's tolerance: no store more than 2 x (2 + 1) above another.
        await until(
            lambda: max(env.leaders()) - min(env.leaders()) <= 6,
            600,
            show=lambda: (env.leaders(), env.server.policies.list()),
        )
        st = await status(http, env, "wasm-balance")
        assert st["phase"] == "Running" and int(st["proposalsAccepted"]) >= 140  # type: ignore[arg-type]
        async with http.delete(env.base + "/policies/wasm-balance") as r:
            assert r.status == 200
        # Removed: skew the leaders again; nothing moves them back.
        for region in list(env.fleet.regions.values())[:60]:
            p = region.peer_on(max(env.fleet.stores))
            if p is not None:
                region.leader_id = p.id
                env.fleet.heartbeat(region)
        await asyncio.sleep(60.0)  # simulated: a minute of policy ticks would have moved them
        skewed = max(env.leaders())
        assert skewed > 70
        # Replaced in place by a new version (same name): effects start again.
        await add(
            http,
            env,
            "wasm-balance",
            policies / "balance_leader.wasm",
            config={"batch": 8, "tolerance": 2},
        )
        await until(lambda: max(env.leaders()) - min(env.leaders()) <= 6, 600)
        assert env.server.node.started  # type: ignore[union-attr]


@on_virtual_time
async def test_hostile_policies_are_contained_while_others_run(policies: Path) -> None:
    async with open_env() as env, held_http() as http:
        await add(http, env, "trap", policies / "trap.wat")
        await add(
            http,
            env,
            "loop",
            policies / "loop.wat",
            limits={"timeout_ms": 100, "fuel": 10**11},
            failure_strategy="Retry",
        )
        await add(http, env, "unsafe", policies / "unsafe.wat", failure_strategy="Ignore")
        await add(http, env, "wasm-balance", policies / "balance_leader.wasm")
        await until(lambda: max(env.leaders()) <= 60, 600)
        trap = await status(http, env, "trap")
        assert trap["phase"] == "Disabled" and str(trap["lastError"]).startswith("trap")
        loop = await status(http, env, "loop")
        assert str(loop["lastError"]).startswith("deadline")
        unsafe = await status(http, env, "unsafe")
        assert int(unsafe["proposalsRejected"]) >= 3 and int(unsafe["proposalsAccepted"]) == 0  # type: ignore[arg-type]
        reasons = " | ".join(unsafe["recentRejections"])  # type: ignore[arg-type]
        assert "does not exist" in reasons
        for bad, message in [
            ({"name": "x", "module": "!!"}, "base64"),
            ({"name": "y", "module": base64.b64encode(b"junk").decode()}, "not a valid Wasm"),
            (
                {
                    "name": "z",
                    "module": base64.b64encode((policies / "wrong_abi.wat").read_bytes()).decode(),
                },
                "ABI version",
            ),
            (
                {
                    "name": "w",
                    "module": base64.b64encode((policies / "trap.wat").read_bytes()).decode(),
                    "sha256": "0" * 64,
                },
                "the spec says",
            ),
        ]:
            async with http.post(env.base + "/policies", json=bad) as r:
                assert r.status == 400 and message in await r.json()


def test_wasm_balance_leader_matches_the_builtin_on_the_case(policies: Path) -> None:
    """The balance-leader scenario, once with the built-in scheduler and once with it
    replaced by the Wasm policy: both meet the case's predicate (every store within 5 %
    of the mean) with a similar number of moves."""
    from pdcore.adapters.wasm.host import instantiate
    from pdcore.policy.spec import PolicySpec
    from pdcore.service.policies import LoadedPolicy
    from pdsim.cases import get

    builtin = simulate(get("balance-leader"))

    def use_wasm(server: PdServer) -> None:
        server.node.scheduling.coordinator.remove_scheduler("balance-leader-scheduler")  # type: ignore[union-attr]
        spec = PolicySpec.parse(
            {
                "name": "wasm-balance",
                "module": (policies / "balance_leader.wasm").read_bytes(),
                "config": {"batch": 4, "tolerance": 5},
                "interval_s": 1.0,
            }
        )
        server.policies.put(LoadedPolicy(spec, instantiate(server.wasm_host, spec)))

    case = get("balance-leader")
    case.prepare_server = use_wasm
    wasm = simulate(case)
    assert builtin.ok and wasm.ok, (builtin.json(), wasm.json())
    assert wasm.moves <= builtin.moves * 1.2 + 10, (builtin.json(), wasm.json())
