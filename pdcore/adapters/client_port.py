"""One client port, two protocols: gRPC (HTTP/2) and PD's HTTP API (HTTP/1.1), as PD
serves both on 2379.

grpc core owns the sockets it listens on and speaks only HTTP/2, and grpc python cannot
adopt an accepted socket. So the public port is an asyncio listener that looks at the
first bytes of each connection:

* the HTTP/2 client preface (`PRI * HTTP/2.0`) — the socket is taken from asyncio and
  spliced to the gRPC server, which listens on a private abstract unix socket: splice(2)
  through a pipe each way, so the kernel moves the bytes and Python runs one callback
  per readable event (no bytes objects, no parsing). That callback is the only cost the
  shared port adds to TSO and heartbeats (numbers in docs/benchmarks.md);
* anything else — the socket is given to the aiohttp server as if it had accepted it
  itself: aiohttp parses, the front copies nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
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


_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class _Direction:
    """Bytes from `src` to `dst` through a pipe with splice(2): the kernel moves them,
    Python only runs one callback per readable event. A full `dst` stops reading `src`
    until `dst` drains (back-pressure); end of stream is passed on as a half-close."""

    def __init__(self, conn: _Spliced, src: socket.socket, dst: socket.socket) -> None:
        self.conn, self.src, self.dst = conn, src, dst
        self.loop = conn.loop
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = 0  # bytes in the pipe, not yet in dst
        self.eof = False
        self.loop.add_reader(src.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            n = os.splice(self.src.fileno(), self.w, SPLICE_BUFFER, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self.conn.close()
            return
        if n == 0:
            self.loop.remove_reader(self.src.fileno())
            self.eof = True
        self.pending += n
        self._flush()

    def _flush(self) -> None:
        while self.pending:
            try:
                self.pending -= os.splice(
                    self.r, self.dst.fileno(), self.pending, flags=_SPLICE_FLAGS
                )
            except BlockingIOError:
                self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self._writable)
                return
            except OSError:
                self.conn.close()
                return
        if self.eof:
            self.conn.half_closed(self)

    def _writable(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        self._flush()
        if not self.pending and not self.eof:
            self.loop.add_reader(self.src.fileno(), self._readable)

    def stop(self) -> None:
        for fd in (self.src.fileno(), self.dst.fileno()):
            if fd >= 0:
                self.loop.remove_reader(fd)
                self.loop.remove_writer(fd)
        os.close(self.r)
        os.close(self.w)


class _Spliced:
    """A client connection spliced both ways to the private gRPC socket."""

    def __init__(self, front: ClientPort, client: socket.socket, upstream: socket.socket) -> None:
        self.front, self.client, self.upstream = front, client, upstream
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.ended: set[_Direction] = set()
        self.dirs = (_Direction(self, client, upstream), _Direction(self, upstream, client))

    def half_closed(self, d: _Direction) -> None:
        with contextlib.suppress(OSError):
            d.dst.shutdown(socket.SHUT_WR)
        self.ended.add(d)
        if len(self.ended) == 2:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for d in self.dirs:
            d.stop()
        self.client.close()
        self.upstream.close()
        self.front.connections.discard(self)


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
        self.connections: set[_Spliced] = set()  # closed on close()

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
        """Take the socket from asyncio (a duplicate of its fd: closing the transport
        then sends nothing) and splice it to a fresh connection to the gRPC server."""
        loop = asyncio.get_running_loop()
        raw = client.get_extra_info("socket")
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        client.set_protocol(asyncio.Protocol())
        client.abort()
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, self.grpc_path)
            await loop.sock_sendall(upstream, first)
        except OSError as e:
            log.warning("gRPC server unreachable on the client port: %s", e)
            sock.close()
            upstream.close()
            return
        self.connections.add(_Spliced(self, sock, upstream))
        self.spliced += 1

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        """Stop accepting and drop the spliced connections (call after the gRPC server
        has stopped, so in-flight calls had their grace period)."""
        self.stop_accepting()
        for t in list(self._tasks):
            t.cancel()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()
