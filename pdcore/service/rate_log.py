"""Log lines that repeat — bad input from clients, a background retry that keeps failing,
rejected heartbeats — at a bounded rate: per kind, at most `burst` lines an interval,
the next line carrying how many were held back (`suppressed`). Any client can send
garbage and any dependency can go away; neither may flood the log.

In the service layer so the PD node uses it as the adapters do; its clock is injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

INTERVAL_S = 10.0


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        burst: int = 1,
    ) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._burst = burst
        self._windows: dict[str, tuple[float, int]] = {}  # kind: (start, lines logged)
        self._skipped: dict[str, int] = {}

    def warning(
        self,
        kind: str,
        msg: str,
        *args: object,
        exc_info: bool = False,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        """Log `msg` unless `kind` had its lines this interval; True if logged."""
        return self.log(logging.WARNING, kind, msg, *args, exc_info=exc_info, extra=extra)

    def log(
        self,
        level: int,
        kind: str,
        msg: str,
        *args: object,
        exc_info: bool = False,
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        """`warning` at another level (e.g. INFO for what is expected during failover);
        `extra`: fields of the line besides `kind` and `suppressed`."""
        now = self._clock()
        start, lines = self._windows.get(kind, (now, 0))
        if now - start >= self._interval:
            start, lines = now, 0
        if lines >= self._burst:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        if len(self._windows) > 1024 and kind not in self._windows:
            self._windows = {}  # kinds come from a fixed set; bound it anyway
        self._windows[kind] = (start, lines + 1)
        skipped = self._skipped.pop(kind, 0)
        fields = {**(extra or {}), "kind": kind}
        if skipped:
            fields["suppressed"] = skipped
        self._log.log(level, msg, *args, extra=fields, exc_info=exc_info)
        return True
