"""SchedulerFence: a sidecar admits operator steps only from the scheduler role's
current holder, so a deposed or paused holder can never make TiKV act.

Steps carry the term they were decided in (the Lease's holderIdentity and its
leaseTransitions, see `lease`). Nobody can take the Lease over before the record we last
read has expired, so while that record names the sender's term and is unexpired (minus a
margin for clock skew) the steps are admitted without a read; otherwise the Lease is read
again before deciding. A term lower than one already admitted is refused outright.
"""

from __future__ import annotations

import asyncio

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import ApiError, KubeClient, NotFound
from pdcore.adapters.kube.lease import LeaseRecord
from pdcore.ports import Clock


class SchedulerFence:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        lease_name: str,
        *,
        margin_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.path = kinds.LEASES.path(namespace, lease_name)
        self.margin = margin_s
        self.clock: Clock = clock or SystemClock()
        self.record: LeaseRecord | None = None
        self.highest = 0  # the highest term admitted so far
        self.reads = 0
        self._lock = asyncio.Lock()

    def _current(self, holder: str, term: int) -> bool:
        rec = self.record
        return (
            rec is not None
            and rec.holder == holder
            and rec.transitions == term
            and self.clock.now_s() < rec.renew_time + rec.duration_s - self._margin(rec)
        )

    def _margin(self, rec: LeaseRecord) -> float:
        return min(self.margin, rec.duration_s / 5)  # as the holder's own (see lease)

    async def _read(self) -> None:
        async with self._lock:
            try:
                self.record = LeaseRecord.of(await self.client.get(self.path))
            except NotFound:
                self.record = None
            self.reads += 1

    async def refusal(self, holder: str, term: int) -> str:
        """Why steps of (`holder`, `term`) must not reach TiKV; "" when they may."""
        if term < self.highest:
            return f"stale scheduler term {term} of {holder!r}: term {self.highest} has begun"
        if not self._current(holder, term):
            try:
                await self._read()
            except ApiError as e:  # cannot tell: refuse, the holder re-sends later
                return f"cannot read the scheduler Lease to check the sender: {e}"
            if not self._current(holder, term):
                return self._why_not(holder, term)
        self.highest = max(self.highest, term)
        return ""

    def _why_not(self, holder: str, term: int) -> str:
        rec = self.record
        if rec is None:
            return "nobody holds the scheduler role"
        if rec.holder != holder or rec.transitions != term:
            return (
                f"{holder!r} (term {term}) is not the scheduler: the role is held by "
                f"{rec.holder or 'nobody'!r} in term {rec.transitions}"
            )
        return f"the scheduler Lease of {holder!r} (term {term}) has expired"
