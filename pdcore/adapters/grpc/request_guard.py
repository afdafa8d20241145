"""Every request passes here before servicer code runs: with TLS, is the client's
certificate one we admit (`cert-allowed-cn`)? Then: does it decode?

Requests that do not decode: INVALID_ARGUMENT and one log line per method per
interval. Without this grpc answers `UNKNOWN: Unexpected DecodeError` and logs a full
traceback for each one — any client could flood the log with random bytes.

A server interceptor wraps each method's deserializer so a bad message becomes a
marker instead of an exception, and the handler rejects the marker before any servicer
code runs (for streams: when the bad message arrives, ending the stream). Methods the
generated base class leaves unimplemented answer UNIMPLEMENTED the same quiet way
(they raise NotImplementedError, which grpc would log with a traceback per call)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

from pdcore.service.rate_log import RateLimitedLog

log = logging.getLogger("kubepd.grpc")


class Undecodable:
    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as e:
            return Undecodable(str(e) or type(e).__name__)

    return run


class RequestGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, allowed_cn: Collection[str] = ()) -> None:
        self.bad = RateLimitedLog(log)
        self.rejected = 0
        self.allowed_cn = frozenset(allowed_cn)

    async def _admit(self, context: Any, method: str) -> None:
        """PD's cert-allowed-cn: with a list, only clients whose certificate's common
        name is on it (the TLS handshake already checked the certificate itself)."""
        if not self.allowed_cn:
            return
        names = {n.decode() for n in context.auth_context().get("x509_common_name", [])}
        if not names & self.allowed_cn:
            self.bad.warning(f"cn:{method}", "refused client %s on %s", sorted(names), method)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client certificate common name {sorted(names)} is not allowed",
            )

    async def _reject(self, context: Any, method: str, bad: Undecodable) -> None:
        self.rejected += 1
        self.bad.warning(method, "undecodable request to %s: %s", method, bad.error)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: cannot decode: {bad.error}"
        )

    async def _unimplemented(self, context: Any, method: str) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")

    async def _checked(
        self, requests: AsyncIterator[Any], context: Any, method: str
    ) -> AsyncIterator[Any]:
        async for req in requests:
            if isinstance(req, Undecodable):
                await self._reject(context, method, req)
            yield req

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method: str = details.method
        decode = _tolerant(handler.request_deserializer)
        encode = handler.response_serializer
        guard = self

        if handler.unary_unary is not None:
            uu = handler.unary_unary

            async def unary_unary(req: Any, ctx: Any) -> Any:
                await guard._admit(ctx, method)
                if isinstance(req, Undecodable):
                    await guard._reject(ctx, method, req)
                try:
                    out = uu(req, ctx)
                    return await out if inspect.isawaitable(out) else out
                except NotImplementedError:
                    await guard._unimplemented(ctx, method)

            return grpc.unary_unary_rpc_method_handler(unary_unary, decode, encode)
        if handler.unary_stream is not None:
            us = handler.unary_stream

            if inspect.iscoroutinefunction(us):  # streams with context.write (gRPC health)

                async def unary_write(req: Any, ctx: Any) -> None:
                    await guard._admit(ctx, method)
                    if isinstance(req, Undecodable):
                        await guard._reject(ctx, method, req)
                    await us(req, ctx)

                return grpc.unary_stream_rpc_method_handler(unary_write, decode, encode)

            async def unary_stream(req: Any, ctx: Any) -> AsyncIterator[Any]:
                await guard._admit(ctx, method)
                if isinstance(req, Undecodable):
                    await guard._reject(ctx, method, req)
                try:
                    responses = us(req, ctx)
                except NotImplementedError:
                    await guard._unimplemented(ctx, method)
                async for resp in responses:
                    yield resp

            return grpc.unary_stream_rpc_method_handler(unary_stream, decode, encode)
        if handler.stream_unary is not None:
            su = handler.stream_unary

            async def stream_unary(reqs: AsyncIterator[Any], ctx: Any) -> Any:
                await guard._admit(ctx, method)
                try:
                    out = su(guard._checked(reqs, ctx, method), ctx)
                    return await out if inspect.isawaitable(out) else out
                except NotImplementedError:
                    await guard._unimplemented(ctx, method)

            return grpc.stream_unary_rpc_method_handler(stream_unary, decode, encode)
        ss = handler.stream_stream
        if inspect.iscoroutinefunction(ss):  # streams with context.write

            async def stream_write(reqs: AsyncIterator[Any], ctx: Any) -> None:
                await guard._admit(ctx, method)
                await ss(guard._checked(reqs, ctx, method), ctx)

            return grpc.stream_stream_rpc_method_handler(stream_write, decode, encode)

        async def stream_stream(reqs: AsyncIterator[Any], ctx: Any) -> AsyncIterator[Any]:
            await guard._admit(ctx, method)
            try:
                responses = ss(guard._checked(reqs, ctx, method), ctx)
            except NotImplementedError:
                await guard._unimplemented(ctx, method)
            async for resp in responses:
                yield resp

        return grpc.stream_stream_rpc_method_handler(stream_stream, decode, encode)
