"""Clocks behind the `Clock` port.

* `SystemClock` — real time, for `kubepd serve`, sidecars and the scheduler host.
* `VirtualClock` — the time of a `VirtualEventLoop`: the simulator and the demo run PD and
  the fleet on it, so simulated time passes only when both have nothing left to do.
* `ScaledClock` — wall time sped up, for a simulated fleet driving real processes (the
  sidecar tests, where the API server's Leases keep real time); outcomes there do depend
  on machine load, so scheduling scenarios do not use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pdcore.adapters.virtual_loop import VirtualEventLoop
from pdcore.ports import Timer

# Virtual wall-clock time starts here (2025-01-01T00:00:00Z) so that runs repeat exactly.
VIRTUAL_EPOCH_S = 1_735_689_600.0


class SystemClock:
    speed = 1.0

    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay_s), fn)


class VirtualClock:
    """The clock of a virtual-time loop: `monotonic_s` is the loop's time."""

    speed = 1.0

    def __init__(self, loop: VirtualEventLoop, epoch_s: float = VIRTUAL_EPOCH_S) -> None:
        self.loop = loop
        self.epoch_s = epoch_s

    @classmethod
    def of_running_loop(cls) -> VirtualClock:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualEventLoop):
            raise RuntimeError(
                "VirtualClock needs a VirtualEventLoop (pdcore.adapters.virtual_loop)"
            )
        return cls(loop)

    def monotonic_s(self) -> float:
        return self.loop.time()

    def now_s(self) -> float:
        return self.epoch_s + self.loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        return self.loop.call_later(max(0.0, delay_s), fn)


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

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay_s) / self.speed, fn)
