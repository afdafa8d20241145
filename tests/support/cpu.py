"""CPU-bound processes, to show that an outcome does not depend on machine load."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


@contextmanager
def cpu_hogs(n: int, seconds: float) -> Iterator[None]:
    """`n` busy processes for at most `seconds` (ended when the block ends)."""
    procs = [
        multiprocessing.Process(target=_spin, args=(time.monotonic() + seconds,), daemon=True)
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
