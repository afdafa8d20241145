"""gRPC without sockets: a server and a channel in one event loop.

The simulator runs PD and the fleet in one process on virtual time; sockets and gRPC's own
threads would let wall time leak in. `InProcessServer` takes the same servicer
registration as a `grpc.aio.Server` (`add_PDServicer_to_server(servicer, server)`), and
`InProcessChannel` is what the generated stubs (`pdpb_pb2_grpc.PDStub(channel)`) need.
Every message is still encoded by the sender's serializer and decoded by the receiver's
deserializer, exactly as on the wire, so the codec stays under test.

Streams are bounded both ways (`STREAM_WINDOW` messages, like HTTP/2 flow control): a
sender that outruns its reader waits. A `Latency` function delays messages per method
(in clock seconds, order kept, as on one connection).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

log = logging.getLogger("kubepd.inproc")

STREAM_WINDOW = 256
# grpc.RpcMethodHandler; its behaviours are typed for sync servicers in grpc-stubs.
Handler = Any
Latency = Callable[[str, str], float]  # (method, "request" | "response") -> seconds
_END = object()
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Context:
    """The parts of `grpc.aio.ServicerContext` that servicers use."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self._cancelled = False

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> None:
        raise _Abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._cancelled

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return "inproc"

    def time_remaining(self) -> float | None:
        return None


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


async def _answer(method: str, run: Callable[[_Context], Any]) -> Any:
    """A handler's single response, or the status it ended with as grpc reports it: an
    abort's code, else the code set before raising or returning, else UNKNOWN."""
    ctx = _Context(method)
    try:
        response = run(ctx)
        if inspect.isawaitable(response):
            response = await response
    except _Abort as e:
        raise _rpc_error(e.code, e.details) from None
    except Exception as e:
        if ctx.code is not None and ctx.code != grpc.StatusCode.OK:
            raise _rpc_error(ctx.code, ctx.details) from None
        log.exception("in-process handler %s failed", method)
        raise _rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(e).__name__}: {e}") from None
    if ctx.code is not None and ctx.code != grpc.StatusCode.OK:
        raise _rpc_error(ctx.code, ctx.details)
    return response


class InProcessServer:
    """Collects method handlers the way `grpc.aio.Server` does; serves `InProcessChannel`s."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._generic: list[Any] = []
        self.serving = True
        self.calls: set[_StreamCall] = set()

    # The calls the generated add_*Servicer_to_server functions make.
    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self._handlers[f"/{service}/{name}"] = handler

    def handler(self, method: str) -> Handler | None:
        if not self.serving:
            return None
        found = self._handlers.get(method)
        if found is not None:
            return found
        details = _CallDetails(method)
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    def stop(self) -> None:
        """Refuse new calls and end the streams under way, as a server going away does."""
        self.serving = False
        for call in list(self.calls):
            call.end(_rpc_error(grpc.StatusCode.UNAVAILABLE, "server is shutting down"))


class _CallDetails:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str], ...] = ()


def _codec(kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return kwargs["request_serializer"], kwargs["response_deserializer"]


class InProcessChannel:
    """A channel whose calls go to whatever `target()` returns: a restarted server is
    reached by the same channel, as a client reconnects to the same address."""

    def __init__(
        self,
        target: Callable[[], InProcessServer | None],
        latency: Latency | None = None,
    ) -> None:
        self._target = target
        self._latency = latency
        self._calls: set[_StreamCall] = set()

    # -- what generated stubs call: channel.<kind>(method, request_serializer=...,
    # response_deserializer=...) returns the callable a stub attribute holds.
    def unary_unary(self, method: str, **codec: Any) -> Callable[..., Any]:
        ser, deser = _codec(codec)
        return lambda request, timeout=None, **_: self._unary(method, ser, deser, request, timeout)

    def stream_stream(self, method: str, **codec: Any) -> Callable[..., Any]:
        ser, deser = _codec(codec)
        return lambda requests=None, timeout=None, **_: self._stream(
            method, ser, deser, requests, False, timeout
        )

    def unary_stream(self, method: str, **codec: Any) -> Callable[..., Any]:
        ser, deser = _codec(codec)
        return lambda request, timeout=None, **_: self._stream(
            method, ser, deser, [request], True, timeout
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> Callable[..., Any]:
        async def call(requests: Any, timeout: float | None = None, **_kw: Any) -> Any:
            _, handler = self._find(method)
            behaviour = handler.stream_unary
            if behaviour is None:
                raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not client-streaming")
            wires = [request_serializer(r) async for r in _aiter(requests)]

            async def decoded() -> AsyncIterator[Any]:
                for wire in wires:
                    yield handler.request_deserializer(wire)

            try:
                response = await asyncio.wait_for(
                    _answer(method, lambda ctx: behaviour(decoded(), ctx)), timeout
                )
            except TimeoutError:
                raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            return response_deserializer(handler.response_serializer(response))

        return call

    async def close(self, grace: float | None = None) -> None:
        for c in list(self._calls):
            c.cancel()

    # -- calls ------------------------------------------------------------------------
    def _delay(self, method: str, direction: str) -> float:
        return self._latency(method, direction) if self._latency is not None else 0.0

    def _find(self, method: str) -> tuple[InProcessServer, Handler]:
        server = self._target()
        handler = server.handler(method) if server is not None else None
        if server is None or (handler is None and not server.serving):
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused (server stopped)")
        if handler is None:
            raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {method}")
        return server, handler

    async def _unary(
        self, method: str, ser: Any, deser: Any, request: Any, timeout: float | None
    ) -> Any:
        _, handler = self._find(method)
        wire = ser(request)

        async def serve() -> Any:
            if delay := self._delay(method, "request"):
                await asyncio.sleep(delay)
            behaviour = handler.unary_unary
            if behaviour is None:
                raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not unary")
            request = handler.request_deserializer(wire)
            response = await _answer(method, lambda ctx: behaviour(request, ctx))
            out = handler.response_serializer(response)
            if delay := self._delay(method, "response"):
                await asyncio.sleep(delay)
            return deser(out)

        try:
            return await asyncio.wait_for(serve(), timeout)
        except TimeoutError:
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    def _stream(
        self,
        method: str,
        ser: Any,
        deser: Any,
        requests: Any,
        unary_request: bool,
        timeout: float | None,
    ) -> _StreamCall:
        server, handler = self._find(method)
        call = _StreamCall(self, server, method, handler, ser, deser, requests, unary_request)
        self._calls.add(call)
        server.calls.add(call)
        return call


async def _aiter(items: Any) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class _StreamCall:
    """A streaming call: `async for` its responses, or `write`/`read`, like grpc.aio's."""

    def __init__(
        self,
        channel: InProcessChannel,
        server: InProcessServer,
        method: str,
        handler: Handler,
        ser: Any,
        deser: Any,
        requests: Any,
        unary_request: bool,
    ) -> None:
        self._channel = channel
        self._server = server
        self._method = method
        self._ser, self._deser = ser, deser
        self._up: asyncio.Queue[Any] = asyncio.Queue(STREAM_WINDOW)
        self._down: asyncio.Queue[Any] = asyncio.Queue(STREAM_WINDOW)
        self._status: grpc.aio.AioRpcError | None = None
        self._done = False
        self._writes_done = False
        loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []
        if requests is not None:
            self._tasks.append(loop.create_task(self._feed(requests)))
        self._tasks.append(loop.create_task(self._serve(handler, unary_request)))

    # -- the client's side -------------------------------------------------------------
    async def _feed(self, requests: Any) -> None:
        try:
            async for item in _aiter(requests):
                await self._send_up(item)
            await self._up.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("in-process request iterator of %s failed", self._method)
            self.cancel()

    async def _send_up(self, item: Any) -> None:
        wire = self._ser(item)
        if delay := self._channel._delay(self._method, "request"):
            await asyncio.sleep(delay)
        await self._up.put(wire)

    async def write(self, item: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("RPC already finished.")
        await self._send_up(item)

    async def done_writing(self) -> None:
        if not self._writes_done:
            self._writes_done = True
            await self._up.put(_END)

    async def read(self) -> Any:
        item = await self._down.get()
        if item is _END:
            self._down.put_nowait(_END)
            if self._status is not None:
                raise self._status
            return _EOF
        return self._deser(item)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        while True:
            item = await self.read()
            if item is _EOF:
                return
            yield item

    def cancel(self) -> bool:
        if self._done:
            return False
        self.end(_rpc_error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"))
        return True

    def end(self, status: grpc.aio.AioRpcError) -> None:
        """End the call from outside (client cancel, server shutdown)."""
        self._finish(status)

    def done(self) -> bool:
        return self._done

    def _finish(self, status: grpc.aio.AioRpcError | None, end_queued: bool = False) -> None:
        if self._done:
            return
        self._done, self._status = True, status
        self._channel._calls.discard(self)
        self._server.calls.discard(self)
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if end_queued:
            return
        if self._down.full():  # cut off: what the reader has not taken is lost anyway
            self._down.get_nowait()
        self._down.put_nowait(_END)

    # -- the server's side -------------------------------------------------------------
    async def _requests(self, deserialize: Any) -> AsyncIterator[Any]:
        while True:
            wire = await self._up.get()
            if wire is _END:
                return
            yield deserialize(wire)

    async def _serve(self, handler: Handler, unary_request: bool) -> None:
        ctx = _Context(self._method)
        status: grpc.aio.AioRpcError | None = None
        try:
            if unary_request:
                behaviour = handler.unary_stream
                wire = await self._up.get()
                responses = behaviour(handler.request_deserializer(wire), ctx)
            else:
                behaviour = handler.stream_stream
                responses = behaviour(self._requests(handler.request_deserializer), ctx)
            try:
                async for response in responses:
                    out = handler.response_serializer(response)
                    if delay := self._channel._delay(self._method, "response"):
                        await asyncio.sleep(delay)
                    await self._down.put(out)
            finally:
                # Cancelled between two responses, the handler is parked at a yield: close
                # it, as gRPC does, so its own clean-up (a reader task) runs now and not
                # at the loop's shutdown.
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
        except _Abort as e:
            status = _rpc_error(e.code, e.details)
        except asyncio.CancelledError:
            ctx._cancelled = True
            raise
        except Exception as e:
            log.exception("in-process handler %s failed", self._method)
            status = _rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(e).__name__}: {e}")
        if not self._done:
            await self._down.put(_END)  # after every response, as the status trails them
            self._finish(status, end_queued=True)
