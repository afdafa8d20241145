"""The scheduler role's summary in the TiKVCluster status (`status.scheduling`): who
schedules, operators in flight and finished, and what it is doing or why not — written
by the holder only, at most once per interval and only when it changed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import ApiError, KubeClient, NotFound

log = logging.getLogger("kubepd.kube.status")
INTERVAL_S = 10.0


class SchedulingStatus:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        holder: str,
        summary: Callable[[], dict[str, Any]],
        active: Callable[[], bool],
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.client = client
        self.path = kinds.TIKV_CLUSTERS.path(namespace, cluster, "status")
        self.holder = holder
        self.summary = summary
        self.active = active
        self.interval = interval_s
        self.last: dict[str, Any] | None = None
        self.writes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.active():
                await self.write_once()

    async def write_once(self) -> None:
        status = {"holder": self.holder, **self.summary()}
        if status == self.last:
            return
        try:
            await self.client.patch(self.path, {"status": {"scheduling": status}})
            self.last = status
            self.writes += 1
        except NotFound:
            pass  # no TiKVCluster object (sidecars run by hand): nothing to report on
        except ApiError as e:
            log.info("TiKVCluster scheduling status not written: %s", e)
