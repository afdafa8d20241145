"""The standard `grpc.health.v1.Health` service (Check, Watch) for one member.

Clients (tikv-client-java, load balancers, `grpc_health_probe`) ask it whether the member
can serve. The answer follows a predicate the composition supplies — the embedded server
once started, a sidecar while it is pd-leader or linked to one — for the whole server
("") and for each service registered on it. It starts NOT_SERVING and goes NOT_SERVING
for good when shutdown begins, before the gRPC server stops accepting calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLL_S = 0.25  # how soon a change of the predicate shows


class MemberHealth:
    def __init__(self, poll_s: float = POLL_S) -> None:
        # grpc-stubs describes only the threaded servicer, not the asyncio one.
        self.servicer: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.services: list[str] = [""]  # "" is the whole server
        self.poll_s = poll_s
        self._serving: Callable[[], bool] = lambda: False
        self._last: bool | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def track(self, service: str) -> None:
        if service not in self.services:
            self.services.append(service)

    async def _publish(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in self.services:
            await self.servicer.set(name, status)
        self._last = serving

    async def start(self, serving: Callable[[], bool]) -> None:
        """Publish NOT_SERVING now, then follow `serving` until `shutdown`."""
        self._serving = serving
        await self._publish(False)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def refresh(self) -> None:
        """Publish the predicate's value now instead of at the next poll."""
        now = bool(self._serving())
        if not self._stopping and now != self._last:
            await self._publish(now)

    async def _follow(self) -> None:
        while not self._stopping:
            now = bool(self._serving())
            if now != self._last:
                await self._publish(now)
            await asyncio.sleep(self.poll_s)

    async def shutdown(self) -> None:
        """NOT_SERVING from now on (the package ignores later `set` calls)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.servicer.enter_graceful_shutdown()
