"""World: an embedded kubepd and a simulated fleet on one clock — the simulator's
composition root, shared by the scenario runner, the swarm, the demo and benchmarks.

Two transports:

* ``inproc`` (default): no sockets. The fleet's stubs call PD's servicers through
  `pdcore.adapters.inproc`, every message encoded and decoded as on the wire, all in one
  virtual-time event loop. Runs repeat exactly for a seed, however busy the machine.
* ``grpc``: PD listens on loopback and the fleet talks real gRPC. The virtual clock is
  held while any message is in flight (`pdsim.lockstep`), so time still passes only when
  both sides are idle and the outcome does not depend on load either; message order
  between streams may differ from run to run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pdcore.adapters.clock import VirtualClock
from pdcore.adapters.inproc import InProcessChannel
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.app import PdServer, ServerOptions
from pdcore.domain.config import ClusterConfig
from pdcore.domain.store import StoreState
from pdsim import lockstep
from pdsim.faults import Faults, NoFaults
from pdsim.fleet import Control, Fleet, FleetConfig, HttpControl

TRANSPORTS = ("inproc", "grpc")
# Seconds of simulated time between scheduling ticks (schedulers keep their own
# intervals inside it; operators advance on every heartbeat regardless).
SIM_SCHEDULE_TICK_S = 1.0


@dataclass
class WorldOptions:
    name: str = "sim"
    config: ClusterConfig = field(default_factory=ClusterConfig)
    transport: str = "inproc"
    seed: int = 1
    fleet: FleetConfig | None = None
    faults: Faults = field(default_factory=NoFaults)
    schedule_tick_s: float = SIM_SCHEDULE_TICK_S


class DirectControl:
    """pd-ctl's store commands, called on the in-process server (no HTTP socket)."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def take_offline(self, store_id: int) -> None:
        await self.world.node().set_store_state(store_id, StoreState.OFFLINE)

    async def tombstones(self) -> list[int]:
        return [s.id for s in self.world.node().stores() if s.is_tombstone]


class World:
    def __init__(self, options: WorldOptions) -> None:
        if options.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {options.transport!r}; one of {TRANSPORTS}")
        self.options = options
        self.clock = VirtualClock.of_running_loop()
        self.memory = MemoryStore()  # survives PD restarts, like the embedded file
        self.server: PdServer | None = None
        self.fleet: Fleet | None = None
        self.restarts = 0
        self._port = 0
        self._operators_before = 0  # created by PD processes before the last restart

    def operators_created(self) -> int:
        """Operators PD created in this run, across restarts."""
        return self._operators_before + self._operators_now()

    def _operators_now(self) -> int:
        sched = self.server.node.scheduling if self.server and self.server.node else None
        if sched is None:
            return 0
        return sched.operators_created()

    def node(self) -> Any:
        assert self.server is not None and self.server.node is not None
        return self.server.node

    def _server_options(self) -> ServerOptions:
        o = self.options
        return ServerOptions(
            name=o.name,
            data_dir=None,
            client_urls=[f"http://127.0.0.1:{self._port}"],
            status_addr="127.0.0.1:0",
            clock=self.clock,
            config=o.config,
            listen=o.transport == "grpc",
            seed=o.seed + 1000 * self.restarts,
            schedule_tick_s=o.schedule_tick_s,
            interceptors=[lockstep.Interceptor()] if o.transport == "grpc" else [],
        )

    async def _start_server(self) -> PdServer:
        server = PdServer(self._server_options(), memory=self.memory)
        with lockstep.holding():
            await server.start()
        if self.options.transport == "grpc":
            self._port = int(server.client_address.rsplit(":", 1)[1])
        self.server = server
        return server

    async def start(self) -> Fleet:
        server = await self._start_server()
        o = self.options
        connect: Callable[[str], Any]
        control: Control
        if o.transport == "inproc":
            latency = o.faults.delay_s

            def connect(_address: str) -> Any:
                return InProcessChannel(
                    lambda: self.server.inproc if self.server else None, latency
                )

            control = DirectControl(self)
        else:
            connect = lockstep.channel
            control = lockstep.HeldControl(HttpControl(server.status_address))
        self.fleet = Fleet(
            server.client_address,
            server.status_address,
            self.clock,
            o.fleet,
            seed=o.seed,
            connect=connect,
            control=control,
            faults=o.faults,
        )
        return self.fleet

    async def restart_pd(self, crash: bool = False) -> None:
        """Stop PD and start it again on the same (in-memory) store: regions come back
        from what was flushed, the rest from TiKV's heartbeats; TSO and ids continue
        above the saved marks. `crash=True` stops it as kill -9 would: region changes
        not yet flushed are lost."""
        if self.server is not None:
            self._operators_before += self._operators_now()
            with lockstep.holding():
                await self.server.stop(0, crash=crash)
        self.restarts += 1
        await self._start_server()

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
        if self.server is not None:
            with lockstep.holding():
                await self.server.stop(0)
