"""Logging for bad input from clients: one line per kind, at most once per interval
(with a count of what was skipped), never a traceback — any client can send garbage,
and it must not be able to flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

INTERVAL_S = 10.0


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log `msg` unless `kind` was logged less than an interval ago; True if logged."""
        return self.log(logging.WARNING, kind, msg, *args, exc_info=exc_info)

    def log(self, level: int, kind: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """`warning` at another level (e.g. INFO for what is expected during failover)."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        if len(self._last) > 1024:  # kinds come from a fixed set; bound it anyway
            self._last = {kind: now}
        extra = {"kind": kind, "suppressed": skipped} if skipped else {"kind": kind}
        self._log.log(level, msg, *args, extra=extra, exc_info=exc_info)
        return True
