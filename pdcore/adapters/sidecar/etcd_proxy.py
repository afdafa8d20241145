"""The etcd API on every sidecar: served by the pd-leader, forwarded by the others.

One generic gRPC handler takes every `/etcdserverpb.*` call. On the pd-leader (once its
EtcdService has loaded) it hands the call to the local servicers; elsewhere it relays
the call's bytes to the pd-leader unchanged, streams included, so an etcd client
pointed at its local sidecar sees one etcd. Without a reachable leader a call fails
with UNAVAILABLE, which etcd clients retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.grpc.etcd import add_etcd_services
from pdcore.adapters.grpc.etcd_common import ERR_NO_LEADER
from pdcore.service.etcd import EtcdService

PREFIX = "/etcdserverpb."
STREAMING = {"/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"}
FORWARD_TIMEOUT_S = 10.0
NO_LEADER = f"{ERR_NO_LEADER} (no pd-leader serving the etcd API is known here yet)"


class _Capture:
    """Stands in for a server: collects the handlers generated code registers."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        return None

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            self.methods[f"/{service}/{name}"] = handler


class EtcdProxy(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(
        self,
        leader_address: Callable[[], str],
        dial: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
    ) -> None:
        """`leader_address` is the pd-leader's host:port, "" when unknown or us; `dial`
        opens a channel to it (with TLS when the members use it)."""
        self._leader_address = leader_address
        self._dial = dial
        self._local: dict[str, grpc.RpcMethodHandler[Any, Any]] | None = None
        self._address = ""
        self._channel: grpc.aio.Channel | None = None
        self.forwarded = 0

    def serve_locally(self, etcd: EtcdService | None) -> None:
        if etcd is None:
            self._local = None
            return
        capture = _Capture()
        add_etcd_services(etcd, lambda add, servicer: add(servicer, capture))
        self._local = capture.methods

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        if not method.startswith(PREFIX):
            return None
        if self._local is not None:
            return self._local.get(method)
        if method in STREAMING:
            return grpc.stream_stream_rpc_method_handler(self._relay_stream(method))
        return grpc.unary_unary_rpc_method_handler(self._relay_unary(method))

    def _leader(self) -> grpc.aio.Channel | None:
        address = self._leader_address()
        if not address:
            return None
        if address != self._address or self._channel is None:
            old = self._channel
            self._address, self._channel = address, self._dial(address)
            if old is not None:
                asyncio.get_running_loop().create_task(old.close(None))
        return self._channel

    def _relay_unary(self, method: str) -> Callable[[bytes, Ctx], Any]:
        async def relay(request: bytes, context: Ctx) -> bytes:
            channel = self._leader()
            if channel is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
            self.forwarded += 1
            try:
                out: bytes = await channel.unary_unary(method, None, None)(
                    request, timeout=FORWARD_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")
            return out

        return relay

    def _relay_stream(self, method: str) -> Callable[[AsyncIterator[bytes], Ctx], Any]:
        async def relay(requests: AsyncIterator[bytes], context: Ctx) -> AsyncIterator[bytes]:
            channel = self._leader()
            if channel is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
            self.forwarded += 1
            call = channel.stream_stream(method, None, None)(requests)
            try:
                async for resp in call:
                    yield resp
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")
            finally:
                call.cancel()

        return relay

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
