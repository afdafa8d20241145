"""RegionOperator objects become PD operators of whoever holds the scheduler role, with
their progress and result in status.

An object is submitted once by the holder that sees it (an operator that cannot be
built fails the object with PD's reason; one that waits for a peer id stays Pending).
Its status follows the operator: Running with steps done, then Succeeded, Failed,
Cancelled or TimedOut; finished objects are left alone. If the role moves while one
runs, the new holder submits it again (operators live in the holder's memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pdcore.adapters.kube import convert, kinds, watching
from pdcore.adapters.kube.client import ApiError, KubeClient, Obj
from pdcore.scheduling.operator import Operator, OpStatus
from pdcore.service.scheduling import SchedulingService

log = logging.getLogger("kubepd.kube.regionops")
TERMINAL = ("Succeeded", "Failed", "Cancelled", "TimedOut")
TICK_S = 1.0
_RESULT = {
    OpStatus.SUCCESS: "Succeeded",
    OpStatus.TIMEOUT: "TimedOut",
    OpStatus.CANCELED: "Cancelled",
    OpStatus.REPLACED: "Cancelled",
    OpStatus.EXPIRED: "Cancelled",
}


def admin_request(spec: Obj) -> tuple[str, str, int, dict[str, Any]]:
    """(status kind, PD operator kind, region id, args) of a RegionOperator spec."""
    if "transferLeader" in spec:
        s = spec["transferLeader"]
        return "transferLeader", "transfer-leader", s["regionID"], {"to_store_id": s["toStore"]}
    if "addPeer" in spec:
        s = spec["addPeer"]
        return "addPeer", "add-peer", s["regionID"], {"store_id": s["store"]}
    if "removePeer" in spec:
        s = spec["removePeer"]
        return "removePeer", "remove-peer", s["regionID"], {"store_id": s["store"]}
    if "merge" in spec:
        s = spec["merge"]
        args = {"target_region_id": s["targetRegionID"]}
        return "merge", "merge-region", s["sourceRegionID"], args
    if "split" in spec:
        s = spec["split"]
        args = {"policy": s.get("policy", "approximate"), "keys": s.get("keys", [])}
        return "split", "split-region", s["regionID"], args
    raise ValueError("set exactly one of transferLeader, addPeer, removePeer, merge, split")


class RegionOperatorResources:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        scheduling: SchedulingService,
        active: Callable[[], bool],
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.scheduling = scheduling
        self.active = active
        self.objects: dict[str, Obj] = {}
        self.running: dict[str, tuple[str, Operator]] = {}  # name -> (uid, operator)
        self._written: dict[str, Obj] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _follow(self) -> None:
        async for objs in watching.follow(
            self.client,
            kinds.REGION_OPERATORS.path(self.namespace),
            field_selector=f"spec.cluster={self.cluster}",
        ):
            self.objects = objs

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self.active():
                self.running.clear()  # a holder that lost the role forgets its operators
                continue
            for name, obj in list(self.objects.items()):
                try:
                    await self.reconcile(name, obj)
                except Exception:
                    log.exception("RegionOperator %s", name)

    async def reconcile(self, name: str, obj: Obj) -> None:
        status = obj.get("status") or {}
        if status.get("phase") in TERMINAL:
            return
        uid = obj["metadata"]["uid"]
        mine = self.running.get(name)
        if mine is None or mine[0] != uid:
            await self._submit(name, obj, status)
            return
        op = mine[1]
        started = convert.parse_time(status["startTime"]) if status.get("startTime") else 0.0
        timeout = float(obj["spec"].get("timeoutSeconds", 600))
        timed_out = not op.status.finished and started and time.time() - started > timeout
        if timed_out:
            self.scheduling.cancel_operator(op.region_id, f"timeoutSeconds {timeout:.0f} passed")
        phase = "TimedOut" if timed_out else _RESULT.get(op.status, "Running")
        done = len(op.steps) if op.status is OpStatus.SUCCESS else op.step_index
        change: Obj = {"phase": phase, "stepsDone": done}
        if phase != "Running":
            change["finishTime"] = convert.format_time(time.time())
            change["message"] = f"operator {op.status.value}"
            self.running.pop(name, None)
        await self._write(name, obj, change)

    async def _submit(self, name: str, obj: Obj, status: Obj) -> None:
        spec = obj["spec"]
        now = convert.format_time(time.time())
        if "scatter" in spec:
            ids = [int(i) for i in spec["scatter"]["regionIDs"]]
            done, failed = self.scheduling.scatter_regions(ids, spec["scatter"].get("group", ""))
            phase = "Succeeded" if not failed else "Failed"
            message = f"scattered {done}% of the regions" + (
                f"; failed: {failed[:20]}" if failed else ""
            )
            await self._write(
                name,
                obj,
                {"phase": phase, "kind": "scatter", "message": message, "finishTime": now},
            )
            return
        try:
            kind, pd_kind, region_id, args = admin_request(spec)
        except (ValueError, KeyError) as e:
            await self._write(name, obj, {"phase": "Failed", "message": str(e), "finishTime": now})
            return
        op, problem = self.scheduling.add_operator(pd_kind, region_id, args)
        if op is None:
            if "retry" in problem:  # no peer id yet: try again next tick
                await self._write(name, obj, {"phase": "Pending", "kind": kind, "message": problem})
                return
            await self._write(
                name,
                obj,
                {"phase": "Failed", "kind": kind, "message": problem, "finishTime": now},
            )
            return
        self.running[name] = (obj["metadata"]["uid"], op)
        again = status.get("phase") == "Running"
        await self._write(
            name,
            obj,
            {
                "phase": "Running",
                "kind": kind,
                "operator": op.desc,
                "stepsDone": 0,
                "stepsTotal": len(op.steps),
                "startTime": status.get("startTime") or now,
                "message": "submitted again: the scheduler role moved" if again else op.reason,
            },
        )

    async def _write(self, name: str, obj: Obj, change: Obj) -> None:
        status = {**(obj.get("status") or {}), **self._written.get(name, {}), **change}
        if status == {**(obj.get("status") or {}), **self._written.get(name, {})}:
            return
        status["observedGeneration"] = obj["metadata"].get("generation")
        try:
            await self.client.patch(
                kinds.REGION_OPERATORS.path(self.namespace, name, "status"), {"status": status}
            )
            self._written[name] = status
        except ApiError as e:
            log.info("RegionOperator %s status not written: %s", name, e)
