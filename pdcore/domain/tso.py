"""The timestamp oracle: hybrid timestamps that never repeat and never go back.

A timestamp is (physical ms, logical < 2^18). The allocator serves only below a
*window* that was persisted before use (`saved_until`); a restarted or new leader
starts above the last saved window, so even a crash loses no monotonicity. The
allocator is pure: the caller passes the wall clock and persists windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

LOGICAL_BITS = 18
MAX_LOGICAL = 1 << LOGICAL_BITS
DEFAULT_SAVE_INTERVAL_MS = 3000


class Timestamp(NamedTuple):
    physical: int
    logical: int

    def compose(self) -> int:
        return (self.physical << LOGICAL_BITS) | self.logical


class WindowExhausted(Exception):
    """Serving would cross the persisted window: persist a new one first."""

    def __init__(self, needed_until: int) -> None:
        super().__init__(f"tso window must reach {needed_until}")
        self.needed_until = needed_until


@dataclass(slots=True)
class TsoAllocator:
    physical: int = 0
    logical: int = 0
    saved_until: int = 0  # no timestamp's physical part may reach this
    save_interval_ms: int = DEFAULT_SAVE_INTERVAL_MS

    def start(self, now_ms: int, last_saved: int) -> int:
        """Begin serving after (re)start: jump past every window ever saved.
        Returns the new window to persist before the first timestamp."""
        self.physical = max(now_ms, last_saved + 1, self.physical + 1)
        self.logical = 0
        self.saved_until = 0
        return self.physical + self.save_interval_ms

    def window_needed(self, now_ms: int) -> int | None:
        """A new window to persist now, or None when the current one has room
        (refreshed once less than a third of the interval remains)."""
        head = max(now_ms, self.physical)
        if self.saved_until - head > self.save_interval_ms // 3:
            return None
        return head + self.save_interval_ms

    def set_window(self, saved_until: int) -> None:
        self.saved_until = max(self.saved_until, saved_until)

    def generate(self, count: int, now_ms: int) -> Timestamp:
        """Reserve `count` timestamps; return the largest (the client counts down)."""
        if count <= 0:
            raise ValueError("tso count must be positive")
        if count >= MAX_LOGICAL:
            raise ValueError(f"tso count {count} exceeds {MAX_LOGICAL - 1}")
        physical, logical = self.physical, self.logical
        if now_ms > physical:
            physical, logical = now_ms, 0
        if logical + count >= MAX_LOGICAL:
            physical, logical = physical + 1, 0
        if physical >= self.saved_until:
            raise WindowExhausted(physical + self.save_interval_ms)
        self.physical, self.logical = physical, logical + count
        return Timestamp(physical, logical + count)
