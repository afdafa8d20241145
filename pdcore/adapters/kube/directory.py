"""SidecarDirectory: which sidecar serves which store, for delivering operator steps.

A sidecar learns its store's id from its own TiKV's heartbeats and announces itself in
that store's `TiKVStore` status (`status.sidecar`: pod and URL) — one write per change of
store, never per heartbeat. Whoever holds the scheduler role follows these objects and
sends each store's steps to the URL found there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pdcore.adapters.kube import convert, kinds, watching
from pdcore.adapters.kube.client import ApiError, KubeClient, Obj

log = logging.getLogger("kubepd.kube.directory")
ANNOUNCE_RETRY_S = 1.0


class SidecarDirectory:
    def __init__(self, client: KubeClient, namespace: str, cluster: str) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.urls: dict[int, str] = {}  # store id -> sidecar URL
        self.objects: dict[int, Obj] = {}  # store id -> its TiKVStore object
        self._announced: tuple[int, str] | None = None
        self._wanted: tuple[int, str, str] | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._announcing: asyncio.Task[None] | None = None
        self.announcements = 0

    def url_of(self, store_id: int) -> str | None:
        return self.urls.get(store_id)

    # -- following every store's sidecar -------------------------------------------------
    def follow(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._follow()))

    async def _follow(self) -> None:
        async for objs in watching.follow(
            self.client,
            kinds.TIKV_STORES.path(self.namespace),
            field_selector=f"spec.cluster={self.cluster}",
        ):
            urls: dict[int, str] = {}
            by_id: dict[int, Obj] = {}
            for obj in objs.values():
                sidecar = (obj.get("status") or {}).get("sidecar") or {}
                store_id = (obj.get("spec") or {}).get("storeID")
                if isinstance(store_id, int):
                    by_id[store_id] = obj
                    if sidecar.get("url"):
                        urls[store_id] = str(sidecar["url"])
            self.urls, self.objects = urls, by_id

    # -- announcing this sidecar's store -------------------------------------------------
    def announce(self, store_id: int, pod: str, url: str) -> None:
        """Say (from now on, retried until it lands) that `pod` at `url` serves the store."""
        if self._wanted == (store_id, pod, url):
            return
        self._wanted = (store_id, pod, url)
        self._wake.set()
        if self._announcing is None:
            self._announcing = asyncio.get_running_loop().create_task(self._announcer())
            self._tasks.append(self._announcing)

    async def _announcer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            wanted = self._wanted
            if wanted is None or self._announced == (wanted[0], wanted[2]):
                continue
            store_id, pod, url = wanted
            path = kinds.TIKV_STORES.path(
                self.namespace, convert.store_name(self.cluster, store_id), "status"
            )
            try:
                await self.client.patch(path, {"status": {"sidecar": {"pod": pod, "url": url}}})
                self._announced = (store_id, url)
                self.announcements += 1
                log.info("announced as the sidecar of store %d", store_id, extra={"url": url})
            except ApiError as e:  # e.g. NotFound: the leader has not written the store yet
                log.debug("store %d not announced yet: %s", store_id, e)
                await asyncio.sleep(ANNOUNCE_RETRY_S)
                self._wake.set()

    async def report(self, store_id: int, status: Obj) -> None:
        """Status fields of a store only the pd-leader knows: `drain` (how a drain the
        operator asked for goes) and `down` (silent for longer than max-store-down-time)."""
        path = kinds.TIKV_STORES.path(
            self.namespace, convert.store_name(self.cluster, store_id), "status"
        )
        try:
            await self.client.patch(path, {"status": status})
        except ApiError as e:
            log.info("store %d status not written: %s", store_id, e)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
