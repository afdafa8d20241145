"""The etcd `Watch` service: one bidirectional stream carries many watchers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.grpc.etcd_common import ERR_NO_LEADER, EtcdServicer
from pdcore.adapters.grpc.etcd_kv import kv_pb
from pdcore.domain.mvcc import range_end
from pdcore.proto import etcdserverpb_pb2 as pb
from pdcore.proto import etcdserverpb_pb2_grpc
from pdcore.service.etcd_watch import WatchSpec, WatchStream, WatchUpdate

_FILTER_NOPUT = pb.WatchCreateRequest.NOPUT
_FILTER_NODELETE = pb.WatchCreateRequest.NODELETE


def watch_spec(r: pb.WatchCreateRequest) -> WatchSpec:
    return WatchSpec(
        key=r.key,
        end=range_end(r.range_end),
        start_revision=r.start_revision,
        prev_kv=r.prev_kv,
        no_put=_FILTER_NOPUT in r.filters,
        no_delete=_FILTER_NODELETE in r.filters,
        progress_notify=r.progress_notify,
        watch_id=r.watch_id,
    )


class WatchService(EtcdServicer, etcdserverpb_pb2_grpc.WatchServicer):  # type: ignore[misc]
    def encode(self, u: WatchUpdate) -> pb.WatchResponse:
        resp = pb.WatchResponse(
            watch_id=u.watch_id,
            created=u.created,
            canceled=u.canceled,
            compact_revision=u.compact_revision,
            cancel_reason=u.cancel_reason,
        )
        self.header(resp.header, u.revision)
        for ev in u.events:
            out = resp.events.add()
            out.type = int(ev.type)  # type: ignore[assignment]
            kv_pb(ev.kv, out.kv)
            if ev.prev_kv is not None:
                kv_pb(ev.prev_kv, out.prev_kv)
        return resp

    async def _read(self, requests: AsyncIterator[pb.WatchRequest], stream: WatchStream) -> None:
        async for req in requests:
            which = req.WhichOneof("request_union")
            if which == "create_request":
                stream.create(watch_spec(req.create_request))
            elif which == "cancel_request":
                stream.cancel(req.cancel_request.watch_id)
            elif which == "progress_request":
                stream.progress()

    async def Watch(
        self, request_iterator: AsyncIterator[pb.WatchRequest], context: Ctx
    ) -> AsyncIterator[pb.WatchResponse]:
        stream = self.etcd.hub.open()
        reader = asyncio.create_task(self._read(request_iterator, stream))
        getter: asyncio.Future[WatchUpdate] | None = None
        try:
            while True:
                while not stream.out.empty():
                    yield self.encode(stream.out.get_nowait())
                if reader.done():
                    return  # the client closed its side
                if stream.ended.is_set():
                    await context.abort(grpc.StatusCode.UNAVAILABLE, ERR_NO_LEADER)
                getter = asyncio.ensure_future(stream.out.get())
                ended = asyncio.ensure_future(stream.ended.wait())
                await asyncio.wait({getter, reader, ended}, return_when=asyncio.FIRST_COMPLETED)
                ended.cancel()
                if getter.done():
                    yield self.encode(getter.result())
                else:
                    getter.cancel()
        finally:
            if getter is not None:
                getter.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            stream.close()
