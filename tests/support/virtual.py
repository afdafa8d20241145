"""Tests on virtual time: PD and the fleet in a `VirtualEventLoop` (pdsim.world).

`on_virtual_time` runs an async test on a fresh virtual-time loop. Real sockets are used
only where the test is about them (HTTP to the status port, a CLI subprocess); those
calls hold the virtual clock while they are in flight (`HeldHttp`, `held`), so
simulated time never passes while the test waits on a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from pdcore.adapters import virtual_loop
from pdsim.lockstep import holding

T = TypeVar("T")


def on_virtual_time(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        return virtual_loop.run(lambda: fn(*args, **kwargs))

    return run


async def held(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` with the virtual clock held."""
    with holding():
        return await awaitable


class HeldHttp:
    """aiohttp requests that hold the virtual clock until their body is read."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, **kw: Any) -> AsyncIterator[Any]:
        with holding():
            async with self.session.request(method, url, **kw) as resp:
                await resp.read()
                yield resp

    def get(self, url: str, **kw: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.request("DELETE", url, **kw)


@contextlib.asynccontextmanager
async def held_http() -> AsyncIterator[HeldHttp]:
    async with aiohttp.ClientSession() as session:
        yield HeldHttp(session)


async def until(
    pred: Callable[[], bool], bound_s: float, show: Callable[[], object] | None = None
) -> None:
    """Wait until `pred()` holds, at most `bound_s` simulated seconds."""
    deadline = asyncio.get_running_loop().time() + bound_s
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"condition not reached within {bound_s} simulated seconds"
                + (f": {show()}" if show is not None else "")
            )
        await asyncio.sleep(0.5)
