"""Clocks: the real one, and a scaled one whose seconds pass faster than wall time.

The simulator runs PD's scheduling on a `ScaledClock` so that minutes of cluster time
(store limits per minute, step timeouts, heartbeat intervals) pass in seconds. TSO
always uses the real wall clock.
"""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    speed = 1.0

    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ScaledClock:
    """Time that runs `speed` times faster than wall time, from a common origin."""

    def __init__(self, speed: float = 1.0, origin_s: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._wall0 = time.time() if origin_s is None else origin_s
        self._mono0 = time.monotonic()
        self._sim0 = 0.0

    def monotonic_s(self) -> float:
        return self._sim0 + (time.monotonic() - self._mono0) * self.speed

    def set_speed(self, speed: float) -> None:
        """Change the rate from now on; simulated time stays continuous."""
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        now = time.monotonic()
        self._sim0 += (now - self._mono0) * self.speed
        self._mono0 = now
        self.speed = speed

    def now_s(self) -> float:
        return self._wall0 + self.monotonic_s()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's time."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)
