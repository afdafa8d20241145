"""Lockstep for real gRPC on virtual time: the clock is held while a message is in flight.

On a `VirtualEventLoop` time jumps whenever the loop is idle. With real sockets the loop
is also idle while bytes cross gRPC's threads, so each message holds the clock from the
moment it is sent until its receiver has it: unary calls for their whole round trip,
stream messages one by one (client→server released by the server interceptor, server→
client released when the client reads). Both ends live in this process; a metadata key
joins them. When a call ends, whatever it still held is released.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from pdcore.adapters import virtual_loop
from pdsim.fleet import Control, grpc_channel

KEY = "kubepd-lockstep"
_ids = itertools.count(1)
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


def _loop() -> virtual_loop.VirtualEventLoop | None:
    return virtual_loop.current()


@contextlib.contextmanager
def holding() -> Iterator[None]:
    """Hold the virtual clock (if any) for the duration of the block."""
    loop = _loop()
    if loop is not None:
        loop.hold()
    try:
        yield
    finally:
        if loop is not None:
            loop.release()


class _Ledger:
    """Messages of one streaming call sent but not yet received, per direction."""

    def __init__(self, loop: virtual_loop.VirtualEventLoop) -> None:
        self.loop = loop
        self.up = 0
        self.down = 0
        self.closed = False

    def sent_up(self) -> None:
        if not self.closed:
            self.up += 1
            self.loop.hold()

    def got_up(self) -> None:
        if not self.closed and self.up > 0:
            self.up -= 1
            self.loop.release()

    def sent_down(self) -> None:
        if not self.closed:
            self.down += 1
            self.loop.hold()

    def got_down(self) -> None:
        if not self.closed and self.down > 0:
            self.down -= 1
            self.loop.release()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for _ in range(self.up + self.down):
            self.loop.release()
        self.up = self.down = 0


_ledgers: dict[str, _Ledger] = {}


class _HeldStream:
    """A streaming call whose messages hold the clock; otherwise the grpc.aio call."""

    def __init__(self, call: Any, ledger: _Ledger, token: str) -> None:
        self._call, self._ledger, self._token = call, ledger, token

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        try:
            async for item in self._call:
                self._ledger.got_down()
                yield item
        finally:
            self._end()

    async def read(self) -> Any:
        item = await self._call.read()
        if item is _EOF:
            self._end()
        else:
            self._ledger.got_down()
        return item

    async def write(self, item: Any) -> None:
        self._ledger.sent_up()
        await self._call.write(item)

    async def done_writing(self) -> None:
        await self._call.done_writing()

    def cancel(self) -> bool:
        self._end()
        return bool(self._call.cancel())

    def done(self) -> bool:
        return bool(self._call.done())

    def _end(self) -> None:
        self._ledger.close()
        _ledgers.pop(self._token, None)


class _Channel:
    """Wraps a grpc.aio channel so the generated stubs' calls hold the clock."""

    def __init__(self, inner: grpc.aio.Channel) -> None:
        self._inner = inner

    def unary_unary(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        call = self._inner.unary_unary(*args, **kwargs)

        async def held(request: Any, **kw: Any) -> Any:
            with holding():
                return await call(request, **kw)

        return held

    def stream_stream(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        call = self._inner.stream_stream(*args, **kwargs)

        def start(requests: Any = None, **kw: Any) -> Any:
            loop = _loop()
            if loop is None:
                return call(requests, **kw)
            token = str(next(_ids))
            ledger = _Ledger(loop)
            _ledgers[token] = ledger
            source = requests

            async def sent() -> AsyncIterator[Any]:
                async for item in source:
                    ledger.sent_up()
                    yield item

            metadata = (*tuple(kw.pop("metadata", None) or ()), (KEY, token))
            inner = call(sent() if source is not None else None, metadata=metadata, **kw)
            return _HeldStream(inner, ledger, token)

        return start

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.unary_stream(*args, **kwargs)  # not used by the fleet

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_unary(*args, **kwargs)  # not used by the fleet

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)


def channel(address: str) -> Any:
    return _Channel(grpc_channel(address))


class Interceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Server side: a received stream message releases the clock, a sent one holds it."""

    async def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        token = str(dict(details.invocation_metadata or ()).get(KEY, "")) or None
        if handler is None or token is None or handler.stream_stream is None:
            return handler
        behaviour = handler.stream_stream

        async def wrapped(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            ledger = _ledgers.get(token)

            async def received() -> AsyncIterator[Any]:
                async for item in requests:
                    if ledger is not None:
                        ledger.got_up()
                    yield item

            async for response in behaviour(received(), context):
                if ledger is not None:
                    ledger.sent_down()
                yield response

        return grpc.stream_stream_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class HeldControl:
    """A `Control` whose calls (HTTP over loopback) hold the clock."""

    def __init__(self, inner: Control) -> None:
        self.inner = inner

    async def take_offline(self, store_id: int) -> None:
        with holding():
            await self.inner.take_offline(store_id)

    async def tombstones(self) -> list[int]:
        with holding():
            return await self.inner.tombstones()
