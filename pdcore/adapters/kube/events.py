"""Warning Events (core/v1) on kubepd's objects, so `kubectl describe` shows what went
wrong. At most one per reason per object per EVENT_EVERY_S: a policy that traps every
second must not flood the API server. Posting never blocks or fails the caller."""

from __future__ import annotations

import asyncio
import logging
import time

from pdcore.adapters.kube import convert, kinds
from pdcore.adapters.kube.client import ApiError, KubeClient, Obj

log = logging.getLogger("kubepd.kube.events")
EVENT_EVERY_S = 60.0
MAX_MESSAGE_CHARS = 1024


class EventRecorder:
    def __init__(
        self, client: KubeClient, namespace: str, component: str, instance: str = ""
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.component = component
        self.instance = instance
        self.posted = 0
        self._last: dict[tuple[str, str], float] = {}  # (object uid, reason) -> monotonic
        self._tasks: set[asyncio.Task[None]] = set()

    def warn(self, obj: Obj, reason: str, message: str) -> bool:
        """Post a Warning Event on `obj` unless one with this reason went out lately."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("uid", meta.get("name", ""))), reason)
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < EVENT_EVERY_S:
            return False
        self._last[key] = now
        task = asyncio.get_running_loop().create_task(self._post(obj, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _post(self, obj: Obj, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        stamp = convert.format_time(time.time())
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name', 'object')}.",
                "namespace": self.namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", kinds.API_VERSION),
                "kind": obj.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": self.namespace,
                "uid": meta.get("uid", ""),
            },
            "type": "Warning",
            "reason": reason,
            "message": message[:MAX_MESSAGE_CHARS],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": self.component, "host": self.instance},
        }
        try:
            await self.client.create(kinds.EVENTS.path(self.namespace), body)
            self.posted += 1
        except (ApiError, OSError) as e:
            log.info("event %s not posted: %s", reason, e)
