"""ClientServer: a member's gRPC server on its client URL, with gRPC health, and PD's HTTP
API on the same port (see `pdcore.adapters.client_port`).

Both compositions (embedded and sidecar) build one; adding a service is one `add` line:

    server.add(pdpb_pb2_grpc.add_PDServicer_to_server, PdService(node))
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from pdcore.adapters.client_port import ClientPort, private_grpc_address
from pdcore.adapters.grpc.health import MemberHealth
from pdcore.adapters.net import DEFAULT_MAX_MESSAGE_BYTES, host_port
from pdcore.adapters.tls import Security, add_grpc_port

log = logging.getLogger("kubepd.server")

AddServicer = Callable[[Any, grpc.aio.Server], None]


def service_name(add: AddServicer) -> str:
    """`pdcore.proto.pdpb_pb2_grpc.add_PDServicer_to_server` -> "pdpb.PD" (from the
    generated module's descriptor, so renaming a proto package needs no edit here)."""
    short = add.__name__.removeprefix("add_").removesuffix("Servicer_to_server")
    pb2 = importlib.import_module(add.__module__.removesuffix("_grpc"))
    return str(pb2.DESCRIPTOR.services_by_name[short].full_name)


class ClientServer:
    def __init__(
        self,
        client_url: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        http_on_client_port: bool = True,
        interceptors: list[Any] | None = None,  # grpc.aio.ServerInterceptor
        security: Security | None = None,
    ) -> None:
        self.host, self.port = host_port(client_url)
        self.security = security or Security()
        # With TLS, gRPC terminates it itself on the client port: the front would have to
        # decrypt every byte in Python to tell the protocols apart, so HTTP stays on the
        # status address (also over TLS).
        self.http_on_client_port = http_on_client_port and not self.security.enabled
        if http_on_client_port and self.security.enabled:
            log.info("TLS on: the client port serves gRPC only; HTTP is on the status address")
        self.grpc = grpc.aio.server(
            interceptors=interceptors or None,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = MemberHealth()
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.grpc)
        self.front: ClientPort | None = None
        self.address = ""  # host:port clients use

    def add(self, add: AddServicer, servicer: Any) -> None:
        add(servicer, self.grpc)
        self.health.track(service_name(add))

    def replace_method(self, service: str, method: str, handler: Any) -> None:
        """Serve `method` of an added service with `handler` instead (a registered
        handler wins over the generated one: the last registration of a method counts)."""
        self.grpc.add_registered_method_handlers(service, {method: handler})  # type: ignore[attr-defined]

    async def bind(self) -> str:
        """Take the client port (before anything is served on it): returns host:port."""
        if not self.http_on_client_port:
            bound = add_grpc_port(self.grpc, f"{self.host}:{self.port}", self.security)
            if bound == 0:
                raise OSError(
                    f"cannot listen on {self.host}:{self.port} (in use, or not a local address)"
                )
        else:
            grpc_addr, front_path = private_grpc_address()
            if self.grpc.add_insecure_port(grpc_addr) == 0:
                raise OSError(f"cannot listen on {grpc_addr}")
            self.front = ClientPort(front_path)
            try:
                bound = await self.front.listen(self.host, self.port)
            except OSError as e:
                raise OSError(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from None
        self.address = f"{self.host}:{bound}"
        return self.address

    async def start(
        self, serving: Callable[[], bool], http: Callable[[], asyncio.Protocol] | None
    ) -> None:
        """Serve gRPC, then open the client port; `http` makes aiohttp's protocol for an
        HTTP/1.x connection (`AppRunner.server`). Health follows `serving`."""
        await self.health.start(serving)
        await self.grpc.start()
        if self.front is not None:
            await self.front.serve(http)

    async def stop(self, grace_s: float) -> None:
        await self.health.shutdown()
        if self.front is not None:
            self.front.stop_accepting()
        await self.grpc.stop(grace_s)
        if self.front is not None:
            await self.front.close()
