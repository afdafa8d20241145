"""LeaseRole: a role (pd-leader, scheduler) held through a coordination.k8s.io/v1 Lease.

The holder renews by resourceVersion compare-and-swap; a 409 means another candidate
wrote first. `is_held()` is fenced on the local monotonic clock: it is true only until
`(start of the last successful renew) + duration - margin`, so a holder that cannot
renew stops serving before any other candidate may take the lease (which needs
`renewTime + duration` to pass on the API server's record). Each takeover increases
`leaseTransitions`, the fencing token that work done under the role carries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from pdcore.adapters.kube.client import ApiError, Conflict, KubeClient, NotFound, Obj

log = logging.getLogger("kubepd.lease")


def _fmt(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str) -> float:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


class LeaseRole:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 5.0,
        renew_period_s: float = 1.0,
        margin_s: float | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if renew_period_s >= lease_duration_s:
            raise ValueError("renew period must be shorter than the lease duration")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = lease_duration_s
        self.renew_period = renew_period_s
        self.margin = margin_s if margin_s is not None else min(1.0, lease_duration_s / 5)
        self.on_change = on_change
        self.token = 0  # leaseTransitions when we last acquired
        self.holder = ""
        self._held_until = 0.0
        self._was_held = False
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def is_held(self) -> bool:
        return not self.stopped and time.monotonic() < self._held_until

    def _notify(self) -> None:
        held = self.is_held()
        if held != self._was_held:
            self._was_held = held
            log.info(
                "lease role changed", extra={"lease": self.name, "held": held, "token": self.token}
            )
            if self.on_change is not None:
                self.on_change(held)

    async def try_once(self, may_acquire: bool = True) -> bool:
        """One acquire-or-renew attempt. Returns whether we hold the lease now."""
        started = time.monotonic()
        now = time.time()
        try:
            try:
                obj = await self.client.get(self.path)
            except NotFound:
                if not may_acquire:
                    return False
                body: Obj = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {
                        "holderIdentity": self.identity,
                        "leaseDurationSeconds": max(1, round(self.duration)),
                        "acquireTime": _fmt(now),
                        "renewTime": _fmt(now),
                        "leaseTransitions": 1,
                    },
                }
                await self.client.create(
                    f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases", body
                )
                self.token, self.holder = 1, self.identity
                self._held_until = started + self.duration - self.margin
                return True
            spec = obj.setdefault("spec", {})
            holder = spec.get("holderIdentity") or ""
            self.holder = holder
            renew = _parse(spec["renewTime"]) if spec.get("renewTime") else 0.0
            expired = renew + float(spec.get("leaseDurationSeconds", self.duration)) < now
            if holder == self.identity and self._held_until > 0:
                pass  # renew
            elif (not holder or expired) and may_acquire:
                spec["holderIdentity"] = self.identity
                spec["acquireTime"] = _fmt(now)
                spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0)) + 1
            else:
                self._held_until = 0.0
                return False
            spec["renewTime"] = _fmt(now)
            spec["leaseDurationSeconds"] = max(1, round(self.duration))
            await self.client.replace(self.path, obj)  # carries the resourceVersion we read
            self.token = int(spec["leaseTransitions"])
            self.holder = self.identity
            self._held_until = started + self.duration - self.margin
            return True
        except Conflict:
            self._held_until = 0.0 if self.holder != self.identity else self._held_until
            return False
        except ApiError as e:
            log.warning("lease %s: %s", self.name, e)
            return self.is_held()
        finally:
            self._notify()

    async def release(self) -> None:
        """Give the role up at once (the next candidate need not wait for expiry)."""
        self._held_until = 0.0
        try:
            obj = await self.client.get(self.path)
            if obj.get("spec", {}).get("holderIdentity") == self.identity:
                obj["spec"]["holderIdentity"] = ""
                await self.client.replace(self.path, obj)
        except ApiError:
            pass
        self._notify()

    def start(self, may_acquire: Callable[[], bool] | None = None) -> None:
        async def loop() -> None:
            while not self.stopped:
                await self.try_once(may_acquire() if may_acquire else True)
                await asyncio.sleep(self.renew_period)

        self._task = asyncio.get_running_loop().create_task(loop(), name=f"lease-{self.name}")

    async def stop(self, release: bool = True) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if release:
            await self.release()
