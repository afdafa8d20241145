"""An asyncio event loop on virtual time: a discrete-event simulator for PD and its fleet.

`loop.time()` is a number this loop owns. When nothing is ready to run and no work is in
flight outside the loop, the loop jumps straight to its next timer instead of waiting
for it. So `asyncio.sleep`, `call_later` and `wait_for` deadlines all count simulated
seconds, and a starved process (a busy machine) only runs slower: it never sees time
pass while it waits for the CPU. Outcomes depend on the code and its seeds alone.

Work outside the loop (a real socket, a thread) must hold the clock: `hold()`/`release()`
around it, or the loop's own executor, which does so by itself. While anything is held,
the loop waits for real I/O like any other loop and does not advance time; that is the
lockstep barrier that keeps real-gRPC simulations independent of load too.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

# How long one real wait may last while work outside the loop holds the clock.
HELD_POLL_S = 0.05


class _VirtualSelector(selectors.BaseSelector):
    """The loop's selector: polls real file descriptors without waiting, and turns a
    wait for a timer into a jump of virtual time."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if self._loop.held:
            wait = HELD_POLL_S if timeout is None else min(timeout, HELD_POLL_S)
            return self._inner.select(wait)
        if timeout is None:
            # No timer and nothing held: only another thread can wake us (the self-pipe).
            return self._inner.select(None)
        self._loop.advance(timeout)
        return []


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock advances only when it would otherwise wait."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._vtime = start_s
        self._held = 0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._vtime += seconds

    @property
    def held(self) -> bool:
        return self._held > 0

    def hold(self) -> None:
        """Work outside the loop is under way: time must not pass until `release()`."""
        self._held += 1

    def release(self) -> None:
        if self._held <= 0:
            raise RuntimeError("release() without hold()")
        self._held -= 1

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.hold()
        future.add_done_callback(lambda _f: self.release())
        return future


def current() -> VirtualEventLoop | None:
    """The running loop, if it runs on virtual time."""
    loop = asyncio.get_running_loop()
    return loop if isinstance(loop, VirtualEventLoop) else None


def run(main: Callable[[], Awaitable[T]], start_s: float = 0.0) -> T:
    """Run `main()` to completion on a new virtual-time loop."""
    with asyncio.Runner(loop_factory=lambda: VirtualEventLoop(start_s)) as runner:
        return runner.run(_as_coroutine(main))


async def _as_coroutine(main: Callable[[], Awaitable[T]]) -> T:
    return await main()
