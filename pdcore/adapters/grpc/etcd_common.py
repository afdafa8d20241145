"""What the etcd API's gRPC services share: response headers, etcd's status codes,
and the guard that turns service errors into them."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from pdcore.adapters.grpc.errors import Ctx
from pdcore.domain.errors import TransportError
from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.proto import etcdserverpb_pb2
from pdcore.service.etcd import EtcdService, Header

MAX_REQUEST_BYTES = 1536 * 1024  # etcd's default --max-request-bytes (1.5 MiB)
ERR_NO_LEADER = "etcdserver: no leader"

_CODES = {
    EtcdErrorKind.COMPACTED: grpc.StatusCode.OUT_OF_RANGE,
    EtcdErrorKind.FUTURE_REV: grpc.StatusCode.OUT_OF_RANGE,
    EtcdErrorKind.LEASE_TTL_TOO_LARGE: grpc.StatusCode.OUT_OF_RANGE,
    EtcdErrorKind.LEASE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    EtcdErrorKind.LEASE_EXIST: grpc.StatusCode.FAILED_PRECONDITION,
    EtcdErrorKind.NO_SPACE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(kind: EtcdErrorKind) -> grpc.StatusCode:
    return _CODES.get(kind, grpc.StatusCode.INVALID_ARGUMENT)


def fill_header(out: etcdserverpb_pb2.ResponseHeader, h: Header) -> None:
    out.cluster_id = h.cluster_id
    out.member_id = h.member_id
    out.revision = h.revision
    out.raft_term = h.raft_term


Handler = Callable[[Any, Any, Ctx], Awaitable[Any]]


def etcd_unary(fn: Handler) -> Handler:
    """Reject oversized requests as etcd does; map EtcdError to etcd's status and
    "not the pd-leader" to UNAVAILABLE, which etcd clients retry."""

    @functools.wraps(fn)
    async def handler(self: Any, request: Any, context: Ctx) -> Any:
        if request.ByteSize() > MAX_REQUEST_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, EtcdErrorKind.REQUEST_TOO_LARGE.value
            )
        try:
            return await fn(self, request, context)
        except EtcdError as e:
            await context.abort(status_code(e.kind), e.message)
        except TransportError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{ERR_NO_LEADER} ({e})")

    return handler


class EtcdServicer:
    """Base of the etcd servicers: the service and header helpers."""

    def __init__(self, etcd: EtcdService) -> None:
        self.etcd = etcd

    def header(self, out: etcdserverpb_pb2.ResponseHeader, revision: int | None = None) -> None:
        fill_header(out, self.etcd.header(revision))
