"""One client port, two protocols: gRPC (HTTP/2) and PD's HTTP API (HTTP/1.1), as PD
serves both on 2379.

grpc core owns the sockets it listens on and speaks only HTTP/2, and grpc python cannot
adopt an accepted socket. So the public port is an asyncio listener that looks at the
first bytes of each connection:

* the HTTP/2 client preface (`PRI * HTTP/2.0`) — the connection is spliced to the gRPC
  server, which listens on a private abstract unix socket. The splice is two asyncio
  transports writing to each other, reading into one reused buffer per direction (no
  parsing, no allocation per read, no extra task); it is the only cost the shared port
  adds to TSO and heartbeats (numbers in docs/benchmarks.md);
* anything else — the socket is given to the aiohttp server as if it had accepted it
  itself: aiohttp parses, the front copies nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("kubepd.client_port")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SNIFF_BYTES = 4  # "PRI " is no HTTP/1.1 method; 4 bytes tell the two apart
SNIFF_TIMEOUT_S = 10.0  # a connection that says nothing is closed
SPLICE_BUFFER = 64 << 10


def private_grpc_address() -> tuple[str, str]:
    """A fresh abstract unix socket name: (gRPC's address form, asyncio's form). Abstract
    sockets leave no file behind and are reachable only inside this network namespace."""
    name = f"kubepd-{os.getpid()}-{secrets.token_hex(6)}"
    return f"unix-abstract:{name}", f"\0{name}"


class _Splice(asyncio.BufferedProtocol):
    """One direction of a spliced connection: bytes read here are written to `peer`,
    with back-pressure (a full peer pauses our reading). Reads land in one buffer per
    direction, reused: no allocation per read (asyncio's plain protocols allocate up to
    256 KiB for every recv)."""

    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.on_lost: Callable[[asyncio.Transport], None] | None = None
        self._buf = memoryview(bytearray(SPLICE_BUFFER))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        assert self.peer is not None
        self.peer.write(self._buf[:nbytes])
        if self.peer.get_write_buffer_size():
            # Not all sent: the transport may keep a view of this buffer (Python 3.12+
            # queues views instead of copying), so the next read needs a new one.
            self._buf = memoryview(bytearray(SPLICE_BUFFER))

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.can_write_eof():
            self.peer.write_eof()
            return True  # keep our side open for the peer's remaining bytes
        return False

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()
        if self.on_lost is not None and self.transport is not None:
            self.on_lost(self.transport)


class _Sniffer(asyncio.Protocol):
    """The first protocol of every accepted connection: reads until it can tell HTTP/2
    from HTTP/1.x, then hands the connection over."""

    def __init__(self, front: ClientPort) -> None:
        self.front = front
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.timer = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT_S, transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if len(self.buf) < SNIFF_BYTES and H2_PREFACE.startswith(self.buf):
            return  # too few bytes to tell yet
        if self.timer is not None:
            self.timer.cancel()
        if self.buf.startswith(H2_PREFACE[:SNIFF_BYTES]):
            self.transport.pause_reading()
            self.front.spawn(self.front.splice_to_grpc(self.transport, self.buf))
        else:
            self.front.hand_to_http(self.transport, self.buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class ClientPort:
    """The public client listener; `grpc_path` is the asyncio form of the private gRPC
    socket (see `private_grpc_address`)."""

    def __init__(self, grpc_path: str) -> None:
        self.grpc_path = grpc_path
        self.http_factory: Callable[[], asyncio.Protocol] | None = None
        self.server: asyncio.Server | None = None
        self.spliced = 0  # gRPC connections handed over
        self.http = 0  # HTTP/1.x connections handed over
        self._tasks: set[asyncio.Task[None]] = set()
        self._spliced: set[asyncio.Transport] = set()  # client sides, closed on close()

    async def listen(self, host: str, port: int) -> int:
        """Bind (connections wait in the backlog until `serve`); returns the port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Sniffer(self),
            host,
            port,
            reuse_address=True,
            backlog=1024,
            start_serving=False,
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, http_factory: Callable[[], asyncio.Protocol] | None) -> None:
        """Accept; HTTP/1.x connections go to `http_factory` (an aiohttp `web.Server`),
        or are closed when there is none."""
        assert self.server is not None
        self.http_factory = http_factory
        await self.server.start_serving()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hand_to_http(self, transport: asyncio.Transport, first: bytes) -> None:
        if self.http_factory is None:
            transport.close()
            return
        self.http += 1
        proto = self.http_factory()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.data_received(first)

    async def splice_to_grpc(self, client: asyncio.Transport, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, up = await loop.create_unix_connection(_Splice, self.grpc_path)
        except OSError as e:
            log.warning("gRPC server unreachable on the client port: %s", e)
            client.close()
            return
        down = _Splice()
        down.connection_made(client)
        down.peer, up.peer = upstream, client
        client.set_protocol(down)
        if client.is_closing():  # the client left while we connected
            upstream.close()
            return
        sock = client.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.write(first)
        client.resume_reading()
        self.spliced += 1
        self._spliced.add(client)
        down.on_lost = self._spliced.discard

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        """Stop accepting and drop the spliced connections (call after the gRPC server
        has stopped, so in-flight calls had their grace period)."""
        self.stop_accepting()
        for t in list(self._tasks):
            t.cancel()
        for transport in list(self._spliced):
            transport.close()
        # No wait_closed(): from Python 3.12 it also waits for the HTTP connections,
        # which aiohttp closes itself when its runner is cleaned up.
