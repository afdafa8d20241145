"""The `pdpb.PD` gRPC service: decode, call the PD node, encode.

No scheduling or storage logic lives here. RPCs this class does not define fall
through to the generated base class, which answers UNIMPLEMENTED at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from pdcore.adapters import codec
from pdcore.adapters.grpc import tso_wire
from pdcore.adapters.grpc.errors import Ctx, fill_error, status_of, unary
from pdcore.adapters.grpc.heartbeat_pump import HeartbeatPump
from pdcore.domain.errors import (
    ClusterIdMismatch,
    InvalidValue,
    NotBootstrapped,
    PdError,
    RegionNotFound,
    RegionsNotContainAllKeyRange,
    TransportError,
)
from pdcore.domain.region import Region
from pdcore.domain.store import StoreState
from pdcore.domain.tso import Timestamp
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from pdcore.service.node import PdNode
from pdcore.service.region_ingest import UnknownStoreStream
from pdcore.service.streams import HeartbeatStreams

log = logging.getLogger("kubepd.grpc")

KEEPALIVE_S = 60.0
SYNC_BATCH = 1000
ERR_UNKNOWN = pdpb_pb2.UNKNOWN


class ServerNotStarted(TransportError):
    def __init__(self) -> None:
        super().__init__("server not started")


class PdService(pdpb_pb2_grpc.PDServicer):  # type: ignore[misc]
    def __init__(self, node: PdNode) -> None:
        self.node = node
        self.tso_fast_streams = 0  # Tso streams served by `tso_stream`

    # -- helpers ---------------------------------------------------------------
    def validate(self, header: pdpb_pb2.RequestHeader) -> None:
        self.check_cluster(header.cluster_id)

    def check_cluster(self, cluster_id: int) -> None:
        if not self.node.started:
            raise ServerNotStarted()
        self.node.check_serving()
        if cluster_id != self.node.cluster_id:
            raise ClusterIdMismatch(self.node.cluster_id, cluster_id)

    def header(self, out: pdpb_pb2.ResponseHeader) -> None:
        out.cluster_id = self.node.cluster_id

    def _member_pb(self, out: pdpb_pb2.Member) -> None:
        m = self.node.member
        out.name = m.name
        out.member_id = m.member_id
        out.client_urls.extend(m.client_urls)
        out.peer_urls.extend(m.peer_urls or m.client_urls)
        out.binary_version = m.binary_version
        out.git_hash = m.git_hash
        out.deploy_path = m.deploy_path

    # -- discovery -------------------------------------------------------------
    async def GetMembers(self, request: Any, context: Ctx) -> Any:
        resp = pdpb_pb2.GetMembersResponse()
        self.header(resp.header)
        if not self.node.started:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server not started")
        self._member_pb(resp.members.add())
        self._member_pb(resp.leader)
        self._member_pb(resp.etcd_leader)
        return resp

    async def GetClusterInfo(self, request: Any, context: Ctx) -> Any:
        resp = pdpb_pb2.GetClusterInfoResponse()
        self.header(resp.header)
        resp.serviceModes.append(pdpb_pb2.PD_SVC_MODE)
        return resp

    # -- TSO and IDs -------------------------------------------------------------
    async def _timestamp(self, cluster_id: int, count: int, context: Ctx) -> Timestamp:
        """The largest of `count` new timestamps, or the stream ends with PD's status."""
        try:
            self.check_cluster(cluster_id)
            if count == 0:
                await context.abort(grpc.StatusCode.UNKNOWN, "tso count should be positive")
            return await self.node.tso(count)
        except TransportError as e:
            await context.abort(status_of(e), str(e))
        except ValueError as e:
            await context.abort(grpc.StatusCode.UNKNOWN, str(e))
        except PdError as e:  # e.g. the window could not be saved (disk full)
            await context.abort(grpc.StatusCode.UNKNOWN, e.message)
        raise AssertionError("abort returned")  # pragma: no cover - abort always raises

    async def Tso(self, request_iterator: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
        """The generated handler's Tso (the in-process transport); real servers answer
        the same on bytes with `tso_fast_handler`."""
        async for req in request_iterator:
            ts = await self._timestamp(req.header.cluster_id, req.count, context)
            resp = pdpb_pb2.TsoResponse(count=req.count)
            resp.header.cluster_id = self.node.cluster_id
            resp.timestamp.physical = ts.physical
            resp.timestamp.logical = ts.logical
            yield resp

    def tso_fast_handler(self) -> grpc.RpcMethodHandler[Any, Any]:
        """/pdpb.PD/Tso without protobuf objects: requests decode to (cluster id, count)
        and responses are encoded bytes (`tso_wire`), one await per read and per write.
        Registered over the generated handler on a grpc.aio server; the request guard
        still wraps it (a request that does not decode ends the stream the same way)."""
        return grpc.stream_stream_rpc_method_handler(
            self.tso_stream, request_deserializer=tso_wire.RequestDecoder()
        )

    async def tso_stream(self, requests: AsyncIterator[tuple[int, int]], context: Ctx) -> None:
        encode = tso_wire.ResponseEncoder()
        self.tso_fast_streams += 1
        async for cluster_id, count in requests:
            ts = await self._timestamp(cluster_id, count, context)
            await context.write(encode(self.node.cluster_id, count, ts.physical, ts.logical))

    @unary(pdpb_pb2.AllocIDResponse)
    async def AllocID(self, request: Any, context: Ctx) -> Any:
        count = max(1, request.count)
        last = await self.node.alloc_id(count)
        resp = pdpb_pb2.AllocIDResponse(id=last, count=count)
        self.header(resp.header)
        return resp

    # -- bootstrap and stores ------------------------------------------------------
    @unary(pdpb_pb2.IsBootstrappedResponse)
    async def IsBootstrapped(self, request: Any, context: Ctx) -> Any:
        resp = pdpb_pb2.IsBootstrappedResponse(bootstrapped=self.node.is_bootstrapped)
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.IsSnapshotRecoveringResponse)
    async def IsSnapshotRecovering(self, request: Any, context: Ctx) -> Any:
        resp = pdpb_pb2.IsSnapshotRecoveringResponse(marked=False)
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.BootstrapResponse)
    async def Bootstrap(self, request: Any, context: Ctx) -> Any:
        store = codec.store_from_pb(request.store) if request.HasField("store") else None
        region = codec.region_meta_from_pb(request.region) if request.HasField("region") else None
        await self.node.bootstrap(store, region)
        resp = pdpb_pb2.BootstrapResponse()
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.GetStoreResponse)
    async def GetStore(self, request: Any, context: Ctx) -> Any:
        store = self.node.require_store(request.store_id)
        resp = pdpb_pb2.GetStoreResponse()
        self.header(resp.header)
        codec.store_to_pb(store, resp.store)
        codec.store_stats_to_pb(store.id, store.stats, resp.stats)
        return resp

    @unary(pdpb_pb2.PutStoreResponse)
    async def PutStore(self, request: Any, context: Ctx) -> Any:
        if not request.HasField("store"):
            raise PdError("invalid put store request: missing store")
        await self.node.put_store(codec.store_from_pb(request.store))
        resp = pdpb_pb2.PutStoreResponse()
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.GetAllStoresResponse)
    async def GetAllStores(self, request: Any, context: Ctx) -> Any:
        self.node.require_bootstrapped()
        resp = pdpb_pb2.GetAllStoresResponse()
        self.header(resp.header)
        for s in sorted(self.node.stores(), key=lambda s: s.id):
            if request.exclude_tombstone_stores and s.state == StoreState.TOMBSTONE:
                continue
            codec.store_to_pb(s, resp.stores.add())
        return resp

    @unary(pdpb_pb2.StoreHeartbeatResponse)
    async def StoreHeartbeat(self, request: Any, context: Ctx) -> Any:
        if not request.HasField("stats"):
            raise PdError("invalid request: store heartbeat without stats")
        stats = codec.store_stats_from_pb(request.stats)
        store = await self.node.store_heartbeat(request.stats.store_id, stats)
        resp = pdpb_pb2.StoreHeartbeatResponse(
            cluster_version=self.node.cluster_version(),
            state=int(store.node_state),  # type: ignore[arg-type]
        )
        self.header(resp.header)
        return resp

    # -- region heartbeats -----------------------------------------------------------
    def streams_for(self, context: Ctx) -> HeartbeatStreams | None:
        """Where this stream is bound for pushing commands (None: nowhere)."""
        return self.node.streams

    async def RegionHeartbeat(
        self, request_iterator: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        node = self.node
        pump = HeartbeatPump(
            context=context,
            cluster_id=node.cluster_id,
            streams=self.streams_for(context),
            stats=node.stats,
            stream="pd",
            keepalive_s=KEEPALIVE_S,
        )

        def check(req: Any) -> None:
            self.validate(req.header)
            if not node.is_bootstrapped:
                raise NotBootstrapped()

        def handle(req: Any) -> bool:
            try:
                node.region_heartbeat(codec.region_from_heartbeat(req))
            except UnknownStoreStream as e:
                pump.answer_error(e, req.leader)
                return False
            except PdError as e:
                pump.answer_error(e, req.leader)
            return True

        async for resp in pump.run(request_iterator, check, handle):
            yield resp

    # -- region sync to followers (sidecars) ---------------------------------------------
    async def SyncRegions(
        self, request_iterator: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        """A follower's cache feed: the whole tree first, then every meta change."""
        async for req in request_iterator:
            try:
                self.validate(req.header)
            except TransportError as e:
                await context.abort(status_of(e), str(e))
            break
        node = self.node
        queue: asyncio.Queue[Region] = asyncio.Queue()
        node.region_watchers.add(queue)
        try:
            snapshot = list(node.tree)
            for i in range(0, len(snapshot), SYNC_BATCH):
                yield self._sync_batch(snapshot[i : i + SYNC_BATCH])
            yield self._sync_batch([])  # marks the end of the snapshot
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < SYNC_BATCH:
                    batch.append(queue.get_nowait())
                yield self._sync_batch(batch)
        finally:
            node.region_watchers.discard(queue)

    def _sync_batch(self, regions: list[Region]) -> Any:
        resp = pdpb_pb2.SyncRegionResponse()
        self.header(resp.header)
        codec.sync_batch_to_pb(regions, resp)
        return resp

    # -- region lookups ----------------------------------------------------------------
    def _get_region_resp(self, region: Region | None) -> Any:
        resp = pdpb_pb2.GetRegionResponse()
        self.header(resp.header)
        if region is not None:
            codec.fill_region_response(region, resp)
        return resp

    @unary(pdpb_pb2.GetRegionResponse)
    async def GetRegion(self, request: Any, context: Ctx) -> Any:
        return self._get_region_resp(self.node.get_region(request.region_key))

    @unary(pdpb_pb2.GetRegionResponse)
    async def GetPrevRegion(self, request: Any, context: Ctx) -> Any:
        return self._get_region_resp(self.node.get_prev_region(request.region_key))

    @unary(pdpb_pb2.GetRegionResponse)
    async def GetRegionByID(self, request: Any, context: Ctx) -> Any:
        return self._get_region_resp(self.node.get_region_by_id(request.region_id))

    async def QueryRegion(
        self, request_iterator: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        async for req in request_iterator:
            resp = pdpb_pb2.QueryRegionResponse()
            try:
                self.validate(req.header)
                node = self.node
                node.require_bootstrapped()
                found: dict[int, Region] = {}
                for key in req.keys:
                    r = node.get_region(key)
                    resp.key_id_map.append(r.id if r else 0)
                    if r:
                        found[r.id] = r
                for key in req.prev_keys:
                    r = node.get_prev_region(key)
                    resp.prev_key_id_map.append(r.id if r else 0)
                    if r:
                        found[r.id] = r
                for rid in req.ids:
                    r = node.get_region_by_id(rid)
                    if r:
                        found[r.id] = r
                self.header(resp.header)
                for rid, r in found.items():
                    codec.fill_region_response(r, resp.regions_by_id[rid])
            except TransportError as e:
                await context.abort(status_of(e), str(e))
            except PdError as e:
                resp = pdpb_pb2.QueryRegionResponse()
                fill_error(resp.header, self.node.cluster_id, e)
            yield resp

    @unary(pdpb_pb2.ScanRegionsResponse)
    async def ScanRegions(self, request: Any, context: Ctx) -> Any:
        regions = self.node.scan_regions(request.start_key, request.end_key, request.limit)
        resp = pdpb_pb2.ScanRegionsResponse()
        self.header(resp.header)
        for r in regions:
            codec.region_meta_to_pb(r, resp.region_metas.add())
            leader = resp.leaders.add()
            if r.leader is not None:
                codec.peer_to_pb(r.leader, leader)
            codec.fill_region_response(r, resp.regions.add())
        return resp

    @unary(pdpb_pb2.BatchScanRegionsResponse)
    async def BatchScanRegions(self, request: Any, context: Ctx) -> Any:
        node = self.node
        node.require_bootstrapped()
        limit = max(0, request.limit)
        prev_end: bytes | None = None
        for rng in request.ranges:
            if rng.end_key and rng.start_key >= rng.end_key:
                raise InvalidValue(
                    f"invalid range: start key {rng.start_key.hex()} is not below "
                    f"end key {rng.end_key.hex()}"
                )
            if prev_end is not None and (not prev_end or rng.start_key < prev_end):
                raise InvalidValue("invalid ranges: ranges must be sorted and must not overlap")
            prev_end = rng.end_key
        seen: set[int] = set()
        out: list[Region] = []
        for rng in request.ranges:
            regions = node.scan_regions(rng.start_key, rng.end_key, 0)
            if request.contain_all_key_range:
                _check_coverage(regions, rng.start_key, rng.end_key)
            for r in regions:
                if r.id not in seen:
                    seen.add(r.id)
                    out.append(r)
                if limit and len(out) >= limit:
                    break
            if limit and len(out) >= limit:
                break
        resp = pdpb_pb2.BatchScanRegionsResponse()
        self.header(resp.header)
        for r in out:
            codec.fill_region_response(r, resp.regions.add())
        return resp

    # -- splits --------------------------------------------------------------------------
    @unary(pdpb_pb2.AskBatchSplitResponse)
    async def AskBatchSplit(self, request: Any, context: Ctx) -> Any:
        region = codec.region_meta_from_pb(request.region) if request.HasField("region") else None
        ids = await self.node.ask_batch_split(region, request.split_count)
        resp = pdpb_pb2.AskBatchSplitResponse()
        self.header(resp.header)
        for rid, peer_ids in ids:
            sid = resp.ids.add()
            sid.new_region_id = rid
            sid.new_peer_ids.extend(peer_ids)
        return resp

    @unary(pdpb_pb2.AskSplitResponse)
    async def AskSplit(self, request: Any, context: Ctx) -> Any:
        region = codec.region_meta_from_pb(request.region) if request.HasField("region") else None
        ((rid, peer_ids),) = await self.node.ask_batch_split(region, 1)
        resp = pdpb_pb2.AskSplitResponse(new_region_id=rid, new_peer_ids=peer_ids)
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.ReportBatchSplitResponse)
    async def ReportBatchSplit(self, request: Any, context: Ctx) -> Any:
        self.node.report_batch_split([codec.region_meta_from_pb(r) for r in request.regions])
        resp = pdpb_pb2.ReportBatchSplitResponse()
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.ReportSplitResponse)
    async def ReportSplit(self, request: Any, context: Ctx) -> Any:
        self.node.report_batch_split(
            [codec.region_meta_from_pb(request.left), codec.region_meta_from_pb(request.right)]
        )
        resp = pdpb_pb2.ReportSplitResponse()
        self.header(resp.header)
        return resp

    # -- cluster config ------------------------------------------------------------------
    @unary(pdpb_pb2.GetClusterConfigResponse)
    async def GetClusterConfig(self, request: Any, context: Ctx) -> Any:
        meta = self.node.require_bootstrapped()
        resp = pdpb_pb2.GetClusterConfigResponse()
        self.header(resp.header)
        resp.cluster.id = meta.id
        resp.cluster.max_peer_count = meta.max_peer_count
        return resp

    @unary(pdpb_pb2.PutClusterConfigResponse)
    async def PutClusterConfig(self, request: Any, context: Ctx) -> Any:
        if request.cluster.id and request.cluster.id != self.node.cluster_id:
            raise PdError(
                f"invalid cluster config: cluster id {request.cluster.id} is not "
                f"{self.node.cluster_id}"
            )
        await self.node.put_cluster_meta(request.cluster.max_peer_count)
        resp = pdpb_pb2.PutClusterConfigResponse()
        self.header(resp.header)
        return resp

    # -- GC ----------------------------------------------------------------------------------
    @unary(pdpb_pb2.GetGCSafePointResponse)
    async def GetGCSafePoint(self, request: Any, context: Ctx) -> Any:
        self.node.require_bootstrapped()
        resp = pdpb_pb2.GetGCSafePointResponse(safe_point=self.node.gc.safe_point)
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.UpdateGCSafePointResponse)
    async def UpdateGCSafePoint(self, request: Any, context: Ctx) -> Any:
        new = await self.node.update_gc_safe_point(request.safe_point)
        resp = pdpb_pb2.UpdateGCSafePointResponse(new_safe_point=new)
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.UpdateServiceGCSafePointResponse)
    async def UpdateServiceGCSafePoint(self, request: Any, context: Ctx) -> Any:
        minimum = await self.node.update_service_safe_point(
            request.service_id, request.TTL, request.safe_point
        )
        resp = pdpb_pb2.UpdateServiceGCSafePointResponse()
        self.header(resp.header)
        if minimum is not None:
            resp.service_id = minimum.service_id
            resp.TTL = max(0, minimum.expire_at_s - int(self.node.clock.now_s()))
            resp.min_safe_point = minimum.safe_point
        return resp

    # -- scheduling -----------------------------------------------------------------------------
    @unary(pdpb_pb2.GetOperatorResponse)
    async def GetOperator(self, request: Any, context: Ctx) -> Any:
        self.node.require_bootstrapped()
        resp = pdpb_pb2.GetOperatorResponse(region_id=request.region_id)
        self.header(resp.header)
        sched = self.node.scheduling
        info = sched.get_operator(request.region_id) if sched is not None else None
        if info is None:
            fill_error(resp.header, self.node.cluster_id, RegionNotFound("Not Found"))
            return resp
        resp.desc = info.desc.encode()
        resp.kind = info.kind.encode()
        resp.status = int(info.status)  # type: ignore[assignment]
        return resp

    @unary(pdpb_pb2.ScatterRegionResponse)
    async def ScatterRegion(self, request: Any, context: Ctx) -> Any:
        self.node.require_bootstrapped()
        ids = list(request.regions_id) or ([request.region_id] if request.region_id else [])
        if not ids and request.HasField("region"):
            ids = [request.region.id]
        if not ids:
            raise InvalidValue("invalid request: no region to scatter")
        sched = self.node.scheduling
        if sched is None:
            raise PdError("scheduling is not running on this member")
        finished, failed = sched.scatter_regions(ids, request.group)
        resp = pdpb_pb2.ScatterRegionResponse(finished_percentage=finished)
        resp.failed_regions_id.extend(failed)
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.SplitRegionsResponse)
    async def SplitRegions(self, request: Any, context: Ctx) -> Any:
        self.node.require_bootstrapped()
        sched = self.node.scheduling
        if sched is None:
            raise PdError("scheduling is not running on this member")
        finished, region_ids = sched.split_regions(list(request.split_keys))
        resp = pdpb_pb2.SplitRegionsResponse(finished_percentage=finished)
        resp.regions_id.extend(region_ids)
        self.header(resp.header)
        return resp

    # -- misc TiKV steady state -------------------------------------------------------------------
    @unary(pdpb_pb2.ReportMinResolvedTsResponse)
    async def ReportMinResolvedTS(self, request: Any, context: Ctx) -> Any:
        self.node.report_min_resolved_ts(request.store_id, request.min_resolved_ts)
        resp = pdpb_pb2.ReportMinResolvedTsResponse()
        self.header(resp.header)
        return resp

    @unary(pdpb_pb2.GetMinTSResponse)
    async def GetMinTS(self, request: Any, context: Ctx) -> Any:
        ts = await self.node.tso(1)
        resp = pdpb_pb2.GetMinTSResponse()
        self.header(resp.header)
        resp.timestamp.physical, resp.timestamp.logical = ts.physical, ts.logical
        return resp

    # -- global config (no request header on these) ------------------------------------------------
    async def LoadGlobalConfig(self, request: Any, context: Ctx) -> Any:
        resp = pdpb_pb2.LoadGlobalConfigResponse(revision=self.node.global_config_revision)
        prefix = _config_prefix(request.config_path)
        names = list(request.names) or [
            k[len(prefix) :] for k in sorted(self.node.global_config) if k.startswith(prefix)
        ]
        for name in names:
            item = resp.items.add(name=name)
            value = self.node.global_config.get(prefix + name)
            if value is None:
                item.error.type = pdpb_pb2.GLOBAL_CONFIG_NOT_FOUND
                item.error.message = f"global config {name!r} not found"
            else:
                item.payload = value
        return resp

    async def StoreGlobalConfig(self, request: Any, context: Ctx) -> Any:
        prefix = _config_prefix(request.config_path)
        items: dict[str, bytes | None] = {}
        for ch in request.changes:
            if not ch.name:
                resp = pdpb_pb2.StoreGlobalConfigResponse()
                resp.error.type = pdpb_pb2.INVALID_VALUE
                resp.error.message = "global config item has no name"
                return resp
            deleted = ch.kind == pdpb_pb2.DELETE
            items[prefix + ch.name] = None if deleted else (ch.payload or ch.value.encode())
        await self.node.store_global_config(items)
        return pdpb_pb2.StoreGlobalConfigResponse()

    async def WatchGlobalConfig(self, request: Any, context: Ctx) -> AsyncIterator[Any]:
        prefix = _config_prefix(request.config_path)
        queue: asyncio.Queue[int] = asyncio.Queue()
        self.node.global_config_watchers.add(queue)
        try:
            # Send the current state once, then every change.
            while True:
                resp = pdpb_pb2.WatchGlobalConfigResponse(revision=self.node.global_config_revision)
                self.header(resp.header)
                for k in sorted(self.node.global_config):
                    if k.startswith(prefix):
                        resp.changes.add(name=k[len(prefix) :], payload=self.node.global_config[k])
                yield resp
                await queue.get()
        finally:
            self.node.global_config_watchers.discard(queue)


def _config_prefix(path: str) -> str:
    path = path or "/global/config"
    return path.rstrip("/") + "/"


def _check_coverage(regions: list[Region], start: bytes, end: bytes) -> None:
    """With contain_all_key_range, a hole in [start, end) is an error."""
    cursor = start
    for r in regions:
        if r.start_key > cursor:
            break
        cursor = r.end_key
        if not cursor:
            return
        if end and cursor >= end:
            return
    raise RegionsNotContainAllKeyRange(
        f"regions do not cover the whole range [{start.hex()}, {end.hex()})"
    )
