"""Leader eviction asked for in TiKVStore objects, carried out by the scheduler role.

`spec.evictLeaders: true` on a store (the operator sets it before restarting the
store's pod) puts an evict-leader scheduler for that store on whoever holds the
scheduler role; clearing it removes the scheduler again. The holder reports each
store's leader count in `status.leaderCount`: every second while its leaders are being
evicted (the operator waits for zero), at most every 30 s otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from pdcore.adapters.kube import convert, kinds
from pdcore.adapters.kube.client import ApiError, KubeClient, Obj
from pdcore.adapters.kube.directory import SidecarDirectory
from pdcore.service.scheduling import SchedulingService

log = logging.getLogger("kubepd.kube.evictions")
SLOW_REPORT_S = 30.0
SCHEDULER = "evict-leader-scheduler"


class LeaderEvictions:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        directory: SidecarDirectory,
        scheduling: SchedulingService,
        active: Callable[[], bool],
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.directory = directory
        self.scheduling = scheduling
        self.active = active
        self.ours: set[int] = set()  # stores whose evict-leader scheduler we added
        self._reported: dict[int, tuple[int, float]] = {}
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
            await asyncio.sleep(1.0)
            if not self.active():
                self.ours.clear()  # the next holder starts from the objects
                continue
            try:
                await self.once()
            except Exception:
                log.exception("leader evictions")

    async def once(self) -> None:
        coord = self.scheduling.coordinator
        objects = dict(self.directory.objects)
        wanted = {sid for sid, o in objects.items() if (o.get("spec") or {}).get("evictLeaders")}
        for sid in wanted - self.ours:
            name = f"{SCHEDULER}-{sid}"
            if name not in coord.schedulers:
                coord.add_scheduler(SCHEDULER, {"store_id": sid})
                log.info("evicting leaders", extra={"store": sid})
            self.ours.add(sid)
        for sid in self.ours - wanted:
            with contextlib.suppress(KeyError):
                coord.remove_scheduler(f"{SCHEDULER}-{sid}")
                log.info("leader eviction ended", extra={"store": sid})
            self.ours.discard(sid)
        now = time.monotonic()
        tree = self.scheduling.view.tree
        for sid, obj in objects.items():
            count = tree.store_stats(sid).leader_count
            last = self._reported.get(sid)
            shown = (obj.get("status") or {}).get("leaderCount")
            if shown == count:
                self._reported[sid] = (count, last[1] if last else now)
                continue
            if sid not in wanted and last is not None and now - last[1] < SLOW_REPORT_S:
                continue
            await self._report(sid, obj, count)
            self._reported[sid] = (count, now)

    async def _report(self, sid: int, obj: Obj, count: int) -> None:
        path = kinds.TIKV_STORES.path(
            self.namespace, convert.store_name(self.cluster, sid), "status"
        )
        try:
            await self.client.patch(path, {"status": {"leaderCount": count}})
        except ApiError as e:
            log.info("store %d leader count not written: %s", sid, e)
