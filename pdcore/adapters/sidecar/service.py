"""The PD gRPC API as a sidecar serves it to its local TiKV.

On the pd-leader it is the ordinary PD service. On a follower: GetMembers names this
sidecar (so TiKV keeps every stream local), region reads come from the synced cache,
TSO is batched to the leader, writes are forwarded unchanged, and region heartbeats are
ingested locally with only changes forwarded — on one upstream stream per TiKV stream,
whose scheduling commands are relayed back to TiKV.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, cast

import grpc

from pdcore.adapters import codec
from pdcore.adapters.grpc.errors import Ctx, status_of
from pdcore.adapters.grpc.heartbeat_pump import HeartbeatPump
from pdcore.adapters.grpc.pd_service import PdService, ServerNotStarted
from pdcore.adapters.grpc.stream_errors import stream_failed
from pdcore.adapters.sidecar.leader_link import LeaderLink
from pdcore.domain.errors import ClusterIdMismatch, NotLeader, PdError, TransportError
from pdcore.domain.tso import Timestamp
from pdcore.proto import pdpb_pb2
from pdcore.service.node import PdNode
from pdcore.service.rate_log import RateLimitedLog
from pdcore.service.streams import HeartbeatStreams

log = logging.getLogger("kubepd.sidecar")
_ended = RateLimitedLog(log)

LOCAL_STORE_TTL_S = 30.0  # a store silent this long no longer counts as this pod's
STATS_FORWARD_S = 30.0  # forward an unchanged heartbeat at most this often (stats, binding)
LEADERSHIP_CHECK_S = 0.5  # how soon a cache feed ends after this sidecar stops leading
TSO_FAILOVER_WAIT_S = 6.0  # longer than a Lease runs out and a successor takes over
TSO_RETRY_S = 0.05
VIA_HEADER = "kubepd-via"  # set on streams a sidecar forwards to the pd-leader: its pod


class Forwarded:
    """A unary PD RPC a follower sends to the pd-leader unchanged (the pd-leader answers
    it itself): declared in the class body, `AllocID = Forwarded()`, so the servicer's
    methods are all visible where it is defined."""

    name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(
        self, obj: SidecarService | None, objtype: type | None = None
    ) -> Callable[[Any, Ctx], Coroutine[Any, Any, Any]]:
        if obj is None:
            return getattr(PdService, self.name)  # type: ignore[no-any-return]
        name, service = self.name, obj

        async def forward(request: Any, context: Ctx) -> Any:
            return await service._forward(name, request, context)

        forward.__name__ = name
        return forward


class SidecarService(PdService):
    # -- forwarded to the pd-leader while following (StoreHeartbeat too, below: it also
    # notes which stores are local) ------------------------------------------------------
    AllocID = Forwarded()
    Bootstrap = Forwarded()
    IsBootstrapped = Forwarded()
    GetStore = Forwarded()
    PutStore = Forwarded()
    GetAllStores = Forwarded()
    AskBatchSplit = Forwarded()
    AskSplit = Forwarded()
    ReportBatchSplit = Forwarded()
    ReportSplit = Forwarded()
    GetClusterConfig = Forwarded()
    PutClusterConfig = Forwarded()
    GetGCSafePoint = Forwarded()
    UpdateGCSafePoint = Forwarded()
    UpdateServiceGCSafePoint = Forwarded()
    GetOperator = Forwarded()
    ScatterRegion = Forwarded()
    SplitRegions = Forwarded()
    ReportMinResolvedTS = Forwarded()
    GetMinTS = Forwarded()
    IsSnapshotRecovering = Forwarded()
    LoadGlobalConfig = Forwarded()  # type: ignore[assignment]  # over a plain method
    StoreGlobalConfig = Forwarded()  # type: ignore[assignment]  # over a plain method

    def __init__(
        self,
        node: PdNode,
        link: LeaderLink,
        is_leader: Callable[[], bool],
        local: HeartbeatStreams,
        pod: str,
    ) -> None:
        super().__init__(node)
        self.link = link
        self.is_leader = is_leader
        self.local = local  # the heartbeat stream of this pod's own TiKV, for its steps
        self.pod = pod
        self.absorbed = 0
        self.forwarded_heartbeats = 0
        # Stores whose TiKV sends store heartbeats to this sidecar itself (not forwarded
        # by another sidecar): with the bound region streams, this pod's own stores.
        self.heartbeat_stores: dict[int, float] = {}

    def streams_for(self, context: Ctx) -> HeartbeatStreams | None:
        """Only this pod's TiKV gets steps through this process: a stream another sidecar
        forwards (to us as the pd-leader) is not bound, its steps go to that sidecar."""
        via = dict(context.invocation_metadata() or ()).get(VIA_HEADER)
        return None if via else self.local

    def validate(self, header: pdpb_pb2.RequestHeader) -> None:
        """Cluster id and readiness only: who serves what is decided per RPC."""
        if not self.node.started:
            raise ServerNotStarted()
        if header.cluster_id != self.node.cluster_id:
            raise ClusterIdMismatch(self.node.cluster_id, header.cluster_id)

    def local_stores(self) -> set[int]:
        """This pod's stores: those whose TiKV heartbeats here, lately or on a stream."""
        now = time.monotonic()
        recent = {s for s, at in self.heartbeat_stores.items() if now - at < LOCAL_STORE_TTL_S}
        return recent | set(self.local.connected())

    async def StoreHeartbeat(self, request: Any, context: Ctx) -> Any:
        if (local := self.streams_for(context)) is not None:
            self.heartbeat_stores[request.stats.store_id] = time.monotonic()
            # A TiKV that leads no region opens no region stream here: its store
            # heartbeats still say this sidecar serves it (the operator needs that to
            # drain the store on scale-in instead of removing its pod outright).
            if local.on_bind is not None and request.stats.store_id:
                local.on_bind(request.stats.store_id)
        return await self._forward("StoreHeartbeat", request, context)

    async def _forward(self, name: str, request: Any, context: Ctx) -> Any:
        base = getattr(PdService, name)
        if self.is_leader():
            return await base(self, request, context)
        try:
            return await self.link.forward(name, request, ((VIA_HEADER, self.pod),))
        except TransportError as e:
            await context.abort(status_of(e), str(e))
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")

    # -- region sync: only the pd-leader feeds caches ---------------------------------------
    async def SyncRegions(
        self, request_iterator: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        """A follower's own tree lags and gets no change events, so a cache fed by it
        (another sidecar's, the scheduler host's) would freeze: refuse, and end the feed
        once this sidecar stops leading, so its reader reconnects to the new pd-leader."""
        if not self.is_leader():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not the pd-leader")
        feed = cast(AsyncGenerator[Any, None], super().SyncRegions(request_iterator, context))
        nxt: asyncio.Future[Any] = asyncio.ensure_future(feed.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait({nxt}, timeout=LEADERSHIP_CHECK_S)
                if not done:
                    if not self.is_leader():
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "not the pd-leader")
                    continue
                try:
                    resp = nxt.result()
                except StopAsyncIteration:
                    return
                yield resp
                nxt = asyncio.ensure_future(feed.__anext__())
        finally:
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
            await feed.aclose()

    # -- TSO: batched to the leader -------------------------------------------------------
    async def Tso(self, request_iterator: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
        if self.is_leader():
            async for resp in super().Tso(request_iterator, context):
                yield resp
            return
        async for req in request_iterator:
            try:
                self.validate(req.header)
                if req.count == 0:
                    await context.abort(grpc.StatusCode.UNKNOWN, "tso count should be positive")
                ts = await self._tso_across_failover(req.count)
            except TransportError as e:
                await context.abort(status_of(e), str(e))
            resp = pdpb_pb2.TsoResponse(count=req.count)
            resp.header.cluster_id = self.node.cluster_id
            resp.timestamp.physical, resp.timestamp.logical = ts.physical, ts.logical
            yield resp

    async def _tso_across_failover(self, count: int) -> Timestamp:
        """Through the pd-leader (or from us, once we lead). While there is none — it
        died and its Lease has not run out yet — wait for the next one for a while
        rather than end the client's stream: TiKV would reconnect with backoff."""
        deadline = time.monotonic() + TSO_FAILOVER_WAIT_S
        while True:
            try:
                return await (self.node.tso(count) if self.is_leader() else self.link.tso(count))
            except NotLeader:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(TSO_RETRY_S)

    # -- region heartbeats: local ingest, forward changes, relay commands ---------------------
    async def RegionHeartbeat(
        self, request_iterator: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        if self.is_leader():
            async for resp in super().RegionHeartbeat(request_iterator, context):
                yield resp
            return
        if self.streams_for(context) is None:
            # Another sidecar took us for the pd-leader (a stale Lease, e.g. we were it
            # before a restart): its stream is not ours to serve or bind.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not the pd-leader")
        pump = HeartbeatPump(
            context=context,
            cluster_id=self.node.cluster_id,
            streams=self.local,
            stats=self.node.stats,
            stream="sidecar",
        )
        up: asyncio.Queue[Any] = asyncio.Queue()
        end = object()
        last_forward: dict[int, float] = {}
        pump.on_read_end(lambda: up.put_nowait(end))

        async def upstream_requests() -> AsyncIterator[Any]:
            while True:
                item = await up.get()
                if item is end:
                    return
                yield item

        async def relay() -> None:
            call = None
            try:
                call = self.link.current().RegionHeartbeat(
                    upstream_requests(), metadata=((VIA_HEADER, self.pod),)
                )
                async for resp in call:
                    pump.send(resp)  # errors go back to TiKV as they are
            except (grpc.aio.AioRpcError, NotLeader) as e:
                # Every TiKV stream ends this way while the pd-leader changes hands (dozens
                # a second seen): one line per interval, with the count it stands for.
                _ended.log(logging.INFO, "upstream-ended", "upstream heartbeat stream ended: %s", e)
            except Exception as e:
                stream_failed(e, self.node.stats, "upstream")
            finally:
                if call is not None:  # also stops its task that reads upstream_requests()
                    call.cancel()
            pump.finish()

        def check(req: Any) -> None:
            self.validate(req.header)

        def handle(req: Any) -> bool:
            region = codec.region_from_heartbeat(req)
            cached = self.node.tree.get(region.id)
            now = time.monotonic()
            changed = cached is None or not cached.same_meta(region)
            if changed:
                try:
                    self.node.tree.put(region)
                except PdError:
                    pass  # stale for us: the leader decides and answers
            elif (
                now - last_forward.get(region.id, -1e9) < STATS_FORWARD_S
                and not region.flow.bytes_written
            ):
                self.absorbed += 1
                return True
            last_forward[region.id] = now
            self.forwarded_heartbeats += 1
            up.put_nowait(req)
            return True

        async for resp in pump.run(request_iterator, check, handle, companions=(relay(),)):
            yield resp


# What a follower forwards, as declared above.
FORWARDED_UNARY = tuple(n for n, v in vars(SidecarService).items() if isinstance(v, Forwarded))
