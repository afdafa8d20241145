"""One client port, two protocols: gRPC (HTTP/2) and PD's HTTP API (HTTP/1.1), as PD
serves both on 2379.

grpc core owns the sockets it listens on and speaks only HTTP/2, and grpc python cannot
adopt an accepted socket. So the public port is an asyncio listener that looks at the
first bytes of each connection:

* the HTTP/2 client preface (`PRI * HTTP/2.0`) — the socket is taken from asyncio and
  spliced to the gRPC server, which listens on a private abstract unix socket, by two
  threads per connection doing blocking reads and writes (one per direction). A read
  wakes its thread straight from the kernel and the copy holds the GIL only between two
  system calls: the event loop, which runs PD's TSO and heartbeat handlers, does nothing
  for a spliced connection, and a copy waits at most for the GIL, never for a turn of
  the loop (numbers in docs/benchmarks.md);
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
import threading
from collections.abc import Callable

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


def _copy(src: socket.socket, dst: socket.socket, buf: memoryview) -> None:
    """Copy until `src` ends, then half-close `dst`; any error ends both sides."""
    try:
        while n := src.recv_into(buf):
            dst.sendall(buf[:n])
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _splice(client: socket.socket, first: bytes, grpc_path: str, done: Callable[[], None]) -> None:
    """One gRPC connection, in its own thread: connect to the private gRPC socket, send
    the sniffed bytes, then copy both ways (a second thread for gRPC's answers) until both
    ends have closed."""
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            up.connect(grpc_path)
            up.sendall(first)
        except OSError as e:
            log.warning("gRPC server unreachable on the client port: %s", e)
            return
        back = threading.Thread(
            target=_copy,
            args=(up, client, memoryview(bytearray(SPLICE_BUFFER))),
            name="client-port-splice-back",
            daemon=True,
        )
        back.start()
        _copy(client, up, memoryview(bytearray(SPLICE_BUFFER)))
        back.join()
    finally:
        up.close()
        client.close()
        done()


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
            self.front.splice_to_grpc(self.transport, self.buf)
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
        self._spliced: set[socket.socket] = set()  # client sides, ended on close()
        self._lock = threading.Lock()  # _spliced is changed by the splice threads

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

    def hand_to_http(self, transport: asyncio.Transport, first: bytes) -> None:
        if self.http_factory is None:
            transport.close()
            return
        self.http += 1
        proto = self.http_factory()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.data_received(first)

    def splice_to_grpc(self, client: asyncio.Transport, first: bytes) -> None:
        """Take the socket from asyncio (a duplicate of its descriptor; the transport is
        dropped without touching the connection) and pump it in threads."""
        sock = socket.socket(fileno=os.dup(client.get_extra_info("socket").fileno()))
        client.abort()  # closes asyncio's descriptor only: the duplicate keeps the connection
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._spliced.add(sock)
        self.spliced += 1
        threading.Thread(
            target=_splice,
            args=(sock, first, self.grpc_path, lambda: self._forget(sock)),
            name="client-port-splice",
            daemon=True,
        ).start()

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._spliced.discard(sock)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        """Stop accepting and drop the spliced connections (call after the gRPC server
        has stopped, so in-flight calls had their grace period)."""
        self.stop_accepting()
        with self._lock:
            socks = list(self._spliced)
        for sock in socks:  # wakes both threads of each: they close the sockets themselves
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # No wait_closed(): from Python 3.12 it also waits for the HTTP connections,
        # which aiohttp closes itself when its runner is cleaned up.
