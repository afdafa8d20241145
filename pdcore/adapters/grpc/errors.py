"""Mapping PD errors onto the wire: header errors vs gRPC status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from pdcore.domain.errors import ClusterIdMismatch, NotLeader, PdError, TransportError
from pdcore.proto import pdpb_pb2
from pdcore.service.rate_log import RateLimitedLog

log = logging.getLogger("kubepd.grpc")
_unexpected = RateLimitedLog(log)

Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]


def status_of(err: TransportError) -> grpc.StatusCode:
    if isinstance(err, ClusterIdMismatch):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(err, NotLeader):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.UNAVAILABLE


def fill_error(header: pdpb_pb2.ResponseHeader, cluster_id: int, err: PdError) -> None:
    header.cluster_id = cluster_id
    header.error.type = int(err.kind)  # type: ignore[assignment]
    header.error.message = err.message


Handler = Callable[[Any, Any, Ctx], Awaitable[Any]]


def unary(
    resp_cls: Callable[[], Any], *, check_header: bool = True
) -> Callable[[Handler], Handler]:
    """Wrap a unary handler: validate the request header, turn PdError into a header
    error on an otherwise empty response and TransportError into a gRPC status."""

    def deco(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: Ctx) -> Any:
            try:
                if check_header:
                    self.validate(request.header)
                return await fn(self, request, context)
            except TransportError as e:
                await context.abort(status_of(e), str(e))
            except PdError as e:
                resp = resp_cls()
                fill_error(resp.header, self.node.cluster_id, e)
                return resp
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                # A bug, not the client's fault: answer PD's UNKNOWN header error with the
                # cause, and log the traceback once per kind per interval.
                kind = f"{fn.__name__}:{type(e).__name__}"
                _unexpected.warning(
                    kind, "unexpected error in %s: %r", fn.__name__, e, exc_info=True
                )
                resp = resp_cls()
                fill_error(
                    resp.header,
                    self.node.cluster_id,
                    PdError(f"internal error: {type(e).__name__}: {e}"),
                )
                return resp

        return handler

    return deco
