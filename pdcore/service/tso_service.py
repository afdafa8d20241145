"""TsoService: timestamps, served from memory below a window saved ahead in `MetaStore`.

A member that takes over starts above the last saved window (so time never goes back)
and a keeper task saves the window further ahead before it runs out. A compare-and-swap
conflict on the window means another member serves timestamps: this one stops for good
until it takes over again.
"""

from __future__ import annotations

import asyncio
import logging

from pdcore.domain.errors import CasConflict, NotLeader
from pdcore.domain.tso import DEFAULT_SAVE_INTERVAL_MS, Timestamp, TsoAllocator, WindowExhausted
from pdcore.service.member_state import MemberState, RetryLog

log = logging.getLogger("kubepd.node")

# How often the TSO window is checked and, when it runs low, saved further ahead.
TSO_KEEPER_TICK_S = 0.05


class TsoService:
    def __init__(
        self, member: MemberState, save_interval_ms: int = DEFAULT_SAVE_INTERVAL_MS
    ) -> None:
        self.member = member
        self.alloc = TsoAllocator(save_interval_ms=save_interval_ms)
        self.saved = 0  # the window last saved (or loaded)
        self.lock = asyncio.Lock()  # window moves, one at a time (and take-overs)
        self._keeper_failures = RetryLog("extending the tso window")

    def _now_ms(self) -> int:
        return int(self.member.clock.now_s() * 1000)

    def restart(self) -> None:
        """A fresh allocator that keeps the physical time reached (a new term)."""
        self.alloc = TsoAllocator(
            save_interval_ms=self.alloc.save_interval_ms, physical=self.alloc.physical
        )

    async def take_over(self) -> None:
        """Start serving above the saved window (saving a new one first)."""
        window = self.alloc.start(self._now_ms(), self.saved)
        await self._persist_window(window)

    def step_down(self) -> None:
        """Stop serving timestamps at once: nothing below our window may be reused."""
        self.alloc.saved_until = 0

    async def _persist_window(self, window: int) -> None:
        try:
            await self.member.meta.cas_tso_window(self.saved, window)
        except CasConflict:
            # Someone else moved the window: we are no longer the only TSO server. Stop
            # for good (the keeper no longer retries); only a new take-over restarts.
            self.alloc.saved_until = 0
            log.error("tso window changed underneath; refusing to serve timestamps")
            raise NotLeader("tso window was taken over by another member") from None
        self.saved = window
        self.alloc.set_window(window)

    async def keeper(self) -> None:
        while True:
            await self.member.clock.sleep(TSO_KEEPER_TICK_S)
            if not self.member.is_leader() or self.alloc.saved_until == 0:
                continue
            need = self.alloc.window_needed(self._now_ms())
            if need is not None:
                async with self.lock:
                    try:
                        await self._persist_window(need)
                        self._keeper_failures.ok()
                    except Exception as e:
                        self._keeper_failures.failed(e)

    async def tso(self, count: int) -> Timestamp:
        self.member.check_serving()
        if self.alloc.saved_until == 0:
            raise NotLeader("tso is not ready on this member")
        stats = self.member.stats
        stats.tso_requests += 1
        try:
            ts = self.alloc.generate(count, self._now_ms())
        except WindowExhausted as e:
            async with self.lock:
                try:
                    ts = self.alloc.generate(count, self._now_ms())
                except WindowExhausted:
                    await self._persist_window(e.needed_until)
                    ts = self.alloc.generate(count, self._now_ms())
        stats.tso_timestamps += count
        return ts
