"""HeartbeatPump: the read/respond loop of one region-heartbeat stream, for every servicer
that serves TiKV's `RegionHeartbeat` (the PD service, and a follower sidecar's).

A stream has two halves. A reader task takes each request, checks its header, binds the
stream to the store of the region leader that sent it (so commands for that store reach
it), and hands the request to the servicer's `handle`. The response half yields what is
put on the stream's queue: commands delivered through the binding, error responses,
what a servicer relays, and a keepalive when nothing was sent for a while.

How the reader ends is told apart in `stream_errors`: the client going away is quiet,
anything else is an ERROR with its traceback and a metric.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from pdcore.adapters import codec
from pdcore.adapters.grpc.errors import Ctx, fill_error, status_of
from pdcore.adapters.grpc.stream_errors import read_loop_failed
from pdcore.domain.commands import RegionCommand
from pdcore.domain.errors import PdError, TransportError
from pdcore.proto import metapb_pb2, pdpb_pb2
from pdcore.service.member_state import NodeStats
from pdcore.service.streams import HeartbeatStreams

Handle = Callable[[Any], bool]  # one request; False ends the stream
Check = Callable[[Any], None]  # raises TransportError (abort) or PdError (answer, end)


class HeartbeatPump:
    def __init__(
        self,
        *,
        context: Ctx,
        cluster_id: int,
        streams: HeartbeatStreams | None,
        stats: NodeStats,
        stream: str,
        keepalive_s: float | None = None,
    ) -> None:
        self.context = context
        self.cluster_id = cluster_id
        self.streams = streams  # None: commands are not routed to this stream
        self.stats = stats
        self.stream = stream  # the label on the error metric
        self.keepalive_s = keepalive_s
        self.bound = 0  # the store this stream is bound to
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._end = object()
        self._on_read_end: list[Callable[[], None]] = []

    # -- what goes out ------------------------------------------------------------------
    def deliver(self, cmd: RegionCommand) -> None:
        """A command for the bound store (the `HeartbeatStreams` binding calls this)."""
        self._out.put_nowait(codec.command_to_pb(cmd, self.cluster_id))

    def send(self, resp: Any) -> None:
        self._out.put_nowait(resp)

    def answer_error(self, err: PdError, leader: metapb_pb2.Peer | None) -> None:
        """PD's error in a response header (and the reporting leader as target peer)."""
        resp = pdpb_pb2.RegionHeartbeatResponse()
        fill_error(resp.header, self.cluster_id, err)
        if leader is not None:
            resp.target_peer.CopyFrom(leader)
        self._out.put_nowait(resp)

    def finish(self) -> None:
        """End the response half (after what is already queued)."""
        self._out.put_nowait(self._end)

    def on_read_end(self, fn: Callable[[], None]) -> None:
        """Call `fn` when the reader stops, however it stops."""
        self._on_read_end.append(fn)

    # -- the loop -------------------------------------------------------------------------
    def _bind(self, store_id: int) -> None:
        if self.streams is None or not store_id:
            return
        if self.bound:
            self.streams.unbind(self.bound, self.deliver)
        self.bound = store_id
        self.streams.bind(store_id, self.deliver)

    async def _read(self, requests: AsyncIterator[Any], check: Check, handle: Handle) -> None:
        try:
            async for req in requests:
                try:
                    check(req)
                except TransportError as e:
                    self._out.put_nowait(e)
                    return
                except PdError as e:
                    self.answer_error(e, None)
                    return
                if (store_id := req.leader.store_id) != self.bound:  # rarely: once a stream
                    self._bind(store_id)
                if not handle(req):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            read_loop_failed(e, self.context, self.stats, self.stream)
        finally:
            for fn in self._on_read_end:
                fn()
            self.finish()

    async def run(
        self,
        requests: AsyncIterator[Any],
        check: Check,
        handle: Handle,
        companions: tuple[Coroutine[Any, Any, None], ...] = (),
    ) -> AsyncIterator[Any]:
        """Serve the stream: yields its responses until the reader (or a companion task,
        through `finish`) ends it; a TransportError aborts the call with its status."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._read(requests, check, handle))]
        tasks += [loop.create_task(c) for c in companions]
        try:
            while True:
                if self.keepalive_s is None:
                    item = await self._out.get()
                else:
                    try:
                        item = await asyncio.wait_for(self._out.get(), self.keepalive_s)
                    except TimeoutError:
                        keepalive = pdpb_pb2.RegionHeartbeatResponse()
                        keepalive.header.cluster_id = self.cluster_id
                        yield keepalive
                        continue
                if item is self._end:
                    break
                if isinstance(item, TransportError):
                    await self.context.abort(status_of(item), str(item))
                yield item
        finally:
            for t in tasks:
                t.cancel()
            if self.streams is not None and self.bound:
                self.streams.unbind(self.bound, self.deliver)
