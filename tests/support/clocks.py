"""A clock a test moves by hand (the `Clock` port's reads; no timers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SteppedClock:
    t: float = 1000.0  # wall and monotonic time both; tests add to it

    def now_s(self) -> float:
        return self.t

    def monotonic_s(self) -> float:
        return self.t
