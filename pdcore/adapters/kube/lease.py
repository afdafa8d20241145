"""LeaseRole: a role (pd-leader, scheduler) held through a coordination.k8s.io/v1 Lease.

The rules, and why they keep two holders from ever serving at once:

* Acquire only a Lease that is free (no holder) or expired: its holder's
  `renewTime + leaseDurationSeconds` is in the past. Every write — acquire, renew,
  release — is a PUT carrying the resourceVersion just read, so of two candidates
  racing for the same record exactly one wins; the other gets a 409.
* `is_held()` is fenced on this process's monotonic clock: true only until
  `start of the last successful renewal + duration - margin`. The renewTime we write is
  taken at that same start, so the holder stops serving `margin` seconds before any
  other candidate may take over — even if it cannot reach the API server at all. The
  margin also absorbs wall-clock skew between members (keep skew below it).
* The record's duration is rounded up to whole seconds, so others wait at least as long
  as the holder assumes.
* Each takeover increments `leaseTransitions`: the fencing token of that term
  (`token`). Work done under the role can carry it, and a receiver that has seen a
  higher token refuses the lower one.
* A 409 while renewing does not end the term by itself (an annotation write also
  causes one): the validity of the last successful renewal stands, and we retry at
  once. A renewal that cannot finish before the validity ends is abandoned, and the
  role is reported lost exactly when the validity ends (a timer, not the next attempt).

Hand-over: a candidate built with `preferred=True` (the operator, for the scheduler
role) that finds the role held by someone else writes the annotations
`kubepd.io/preferred-holder` (itself) and `kubepd.io/preferred-time` (now), and keeps
refreshing them. A holder with `yield_to_preferred` (the default) that sees a fresh
request (younger than the lease duration) for someone else releases the role, and
no candidate but the named one acquires while the request is fresh. If the preferred
candidate dies, its request goes stale within one lease duration and the others may
acquire again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import ApiError, Conflict, KubeClient, NotFound, Obj
from pdcore.adapters.kube.convert import format_time, parse_time
from pdcore.ports import Clock

log = logging.getLogger("kubepd.lease")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The parts of a Lease object the election reads."""

    holder: str
    duration_s: float
    renew_time: float  # wall-clock seconds; 0 when never renewed
    transitions: int
    preferred: str  # who asked for a hand-over ("" for nobody)
    preferred_time: float

    @classmethod
    def of(cls, obj: Obj) -> LeaseRecord:
        spec = obj.get("spec") or {}
        notes = obj.get("metadata", {}).get("annotations") or {}
        pref_time = notes.get(kinds.PREFERRED_TIME)
        try:
            preferred_time = parse_time(pref_time) if pref_time else 0.0
        except ValueError:
            preferred_time = 0.0
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_s=float(spec.get("leaseDurationSeconds") or 0),
            renew_time=parse_time(spec["renewTime"]) if spec.get("renewTime") else 0.0,
            transitions=int(spec.get("leaseTransitions") or 0),
            preferred=str(notes.get(kinds.PREFERRED_HOLDER) or ""),
            preferred_time=preferred_time,
        )

    def expired(self, now_s: float) -> bool:
        return not self.holder or self.renew_time + self.duration_s < now_s

    def wanted_by(self, now_s: float, duration_s: float) -> str:
        """Who asked for a hand-over less than a lease duration ago ("" if nobody)."""
        if self.preferred and self.preferred_time + duration_s > now_s:
            return self.preferred
        return ""


class LeaseRole:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 5.0,
        renew_period_s: float = 1.0,
        clock: Clock | None = None,
        *,
        margin_s: float | None = None,
        on_change: Callable[[bool], None] | None = None,
        preferred: bool = False,
        yield_to_preferred: bool = True,
    ) -> None:
        self.margin = margin_s if margin_s is not None else min(1.0, lease_duration_s / 5)
        if not 0 < renew_period_s < lease_duration_s - self.margin:
            raise ValueError(
                "renew period must be shorter than the lease duration minus the margin"
            )
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = lease_duration_s
        self.renew_period = renew_period_s
        self.clock: Clock = clock or SystemClock()
        self.on_change = on_change
        self.preferred = preferred
        self.yield_to_preferred = yield_to_preferred
        self.token = 0  # leaseTransitions of our current (or last) term: the fencing token
        self.holder = ""  # the holder we last saw
        self.acquired = asyncio.Event()  # set while held
        self.lost = asyncio.Event()  # set while not held
        self.lost.set()
        self.stopped = False
        self._held_until = 0.0  # monotonic; 0 = not our term
        self._was_held = False
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._asked_at = -math.inf
        self._deferred = False  # said once that we let a lapsed lease be (not ready)

    @property
    def path(self) -> str:
        return kinds.LEASES.path(self.namespace, self.name)

    def is_held(self) -> bool:
        """True only while the last successful renewal still covers us (see module)."""
        return not self.stopped and self.clock.monotonic_s() < self._held_until

    def valid_for(self) -> float:
        """Seconds the role is still surely ours (0 if not held)."""
        return max(0.0, self._held_until - self.clock.monotonic_s()) if not self.stopped else 0.0

    # -- state changes ------------------------------------------------------------------
    def _notify(self) -> None:
        held = self.is_held()
        if held == self._was_held:
            return
        self._was_held = held
        (self.acquired.set if held else self.acquired.clear)()
        (self.lost.clear if held else self.lost.set)()
        log.info(
            "lease role %s",
            "acquired" if held else "lost",
            extra={"lease": self.name, "identity": self.identity, "token": self.token},
        )
        if self.on_change is not None:
            self.on_change(held)

    def _renewed(self, started: float, token: int) -> None:
        self._held_until = started + self.duration - self.margin
        self.token, self.holder = token, self.identity
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(RuntimeError):  # no running loop: is_held() still works
            delay = max(0.0, self._held_until - self.clock.monotonic_s()) + 0.001
            self._timer = asyncio.get_running_loop().call_later(delay, self._notify)

    def _drop(self) -> None:
        self._held_until = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- one round ----------------------------------------------------------------------
    async def try_once(self, may_acquire: bool = True) -> bool:
        """One acquire-or-renew round. `may_acquire` False means "do not hold the role":
        a holder then releases it. Returns whether we hold the role now."""
        started, now = self.clock.monotonic_s(), self.clock.now_s()
        try:
            # A renewal that cannot finish while we are still covered is worthless.
            limit = self.valid_for() if self._held_until > 0 else None
            if limit is not None and limit <= 0:
                limit = self.client.timeout_s
            for _ in range(2):  # a 409 on renew: look again at once
                try:
                    await asyncio.wait_for(self._round(started, now, may_acquire), limit)
                    break
                except Conflict:
                    if self._held_until <= 0:
                        break
        except (ApiError, TimeoutError) as e:
            log.warning("lease %s: %s", self.name, e)
        self._notify()
        return self.is_held()

    async def _round(self, started: float, now: float, may_acquire: bool) -> None:
        try:
            obj = await self.client.get(self.path)
        except NotFound:
            if may_acquire:
                await self._create(started, now)
            return
        rec = LeaseRecord.of(obj)
        self.holder = rec.holder
        ours = rec.holder == self.identity and self._held_until > 0
        if not ours:
            self._drop()  # whatever we thought, the record says it is not our term
        wanted = rec.wanted_by(now, max(rec.duration_s, self.duration))
        if ours:
            if not may_acquire or (self.yield_to_preferred and wanted and wanted != self.identity):
                log.info("lease %s: giving the role up (wanted by %r)", self.name, wanted)
                await self._write_release(obj)
                return
            await self._write(obj, started, now, acquire=False)
            return
        if not may_acquire:
            if rec.expired(now) and not self._deferred:
                log.info("lease %s: lapsed, not campaigning (this member is not ready)", self.name)
            self._deferred = rec.expired(now)
            return
        self._deferred = False
        if rec.expired(now) and wanted in ("", self.identity):
            await self._write(obj, started, now, acquire=True)
        elif self.preferred and rec.holder != self.identity:
            await self._ask(now)

    async def _create(self, started: float, now: float) -> None:
        body: Obj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.duration),
                "acquireTime": format_time(now, micro=True),
                "renewTime": format_time(now, micro=True),
                "leaseTransitions": 1,
            },
        }
        try:
            await self.client.create(kinds.LEASES.path(self.namespace), body)
        except Conflict:
            return  # another candidate created it first
        self._renewed(started, 1)

    async def _write(self, obj: Obj, started: float, now: float, acquire: bool) -> None:
        spec = dict(obj.get("spec") or {})
        if acquire:
            spec["holderIdentity"] = self.identity
            spec["acquireTime"] = format_time(now, micro=True)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["renewTime"] = format_time(now, micro=True)
        spec["leaseDurationSeconds"] = math.ceil(self.duration)
        meta = dict(obj.get("metadata") or {})
        notes = dict(meta.get("annotations") or {})
        if notes.get(kinds.PREFERRED_HOLDER) == self.identity:  # our request is granted
            notes.pop(kinds.PREFERRED_HOLDER, None)
            notes.pop(kinds.PREFERRED_TIME, None)
            meta["annotations"] = notes
        await self.client.replace(self.path, {**obj, "metadata": meta, "spec": spec})
        self._renewed(started, int(spec["leaseTransitions"]))

    async def _write_release(self, obj: Obj) -> None:
        self._drop()
        self._notify()  # stop serving before anyone else can start
        spec = dict(obj.get("spec") or {})
        spec.pop("holderIdentity", None)
        await self.client.replace(self.path, {**obj, "spec": spec})
        self.holder = ""

    async def _ask(self, now: float) -> None:
        """Ask the holder to hand the role over (at most once per renew period)."""
        if now - self._asked_at < self.renew_period * 0.9:
            return
        self._asked_at = now
        notes = {
            kinds.PREFERRED_HOLDER: self.identity,
            kinds.PREFERRED_TIME: format_time(now, micro=True),
        }
        await self.client.patch(self.path, {"metadata": {"annotations": notes}})

    # -- lifecycle ----------------------------------------------------------------------
    async def release(self) -> None:
        """Give the role up now: stop serving first, then clear the holder so the next
        candidate need not wait for expiry."""
        self._drop()
        self._notify()
        for _ in range(3):
            try:
                obj = await self.client.get(self.path)
                if LeaseRecord.of(obj).holder != self.identity:
                    return
                await self._write_release(obj)
                return
            except Conflict:
                continue
            except ApiError as e:
                log.info("lease %s: release not written (it will expire): %s", self.name, e)
                return

    def start(self, may_acquire: Callable[[], bool] | None = None) -> None:
        """Run rounds every renew period until stop(). `may_acquire()` is asked each
        round: while it is false the role is not taken, and given up if held."""

        async def loop() -> None:
            while not self.stopped:
                began = self.clock.monotonic_s()
                await self.try_once(may_acquire() if may_acquire else True)
                spent = self.clock.monotonic_s() - began
                await asyncio.sleep(max(0.0, self.renew_period - spent))

        self._task = asyncio.get_running_loop().create_task(loop(), name=f"lease-{self.name}")

    async def stop(self, release: bool = True) -> None:
        """Stop renewing. With `release`, clear the holder at once; without, the Lease
        simply expires (what a crash looks like to the others)."""
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release:
            await self.release()
        self._drop()
        self._notify()
