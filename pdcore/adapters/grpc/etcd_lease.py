"""The etcd `Lease` service: grant, revoke, keep-alive stream, time-to-live, list."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.grpc.etcd_common import ERR_NO_LEADER, EtcdServicer, etcd_unary
from pdcore.domain.errors import TransportError
from pdcore.proto import etcdserverpb_pb2 as pb
from pdcore.proto import etcdserverpb_pb2_grpc


class LeaseService(EtcdServicer, etcdserverpb_pb2_grpc.LeaseServicer):  # type: ignore[misc]
    @etcd_unary
    async def LeaseGrant(
        self, request: pb.LeaseGrantRequest, context: Ctx
    ) -> pb.LeaseGrantResponse:
        lease = await self.etcd.lease_grant(request.TTL, request.ID)
        resp = pb.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
        self.header(resp.header)
        return resp

    @etcd_unary
    async def LeaseRevoke(
        self, request: pb.LeaseRevokeRequest, context: Ctx
    ) -> pb.LeaseRevokeResponse:
        rev = await self.etcd.lease_revoke(request.ID)
        resp = pb.LeaseRevokeResponse()
        self.header(resp.header, rev)
        return resp

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest], context: Ctx
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            try:
                ttl = self.etcd.lease_keepalive(req.ID)
            except TransportError as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{ERR_NO_LEADER} ({e})")
            resp = pb.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl)
            self.header(resp.header)
            yield resp

    @etcd_unary
    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: Ctx
    ) -> pb.LeaseTimeToLiveResponse:
        left, lease = self.etcd.lease_time_to_live(request.ID)
        resp = pb.LeaseTimeToLiveResponse(ID=request.ID, TTL=left)
        self.header(resp.header)
        if lease is not None:
            resp.grantedTTL = lease.ttl
            if request.keys:
                resp.keys.extend(sorted(lease.keys))
        return resp

    @etcd_unary
    async def LeaseLeases(
        self, request: pb.LeaseLeasesRequest, context: Ctx
    ) -> pb.LeaseLeasesResponse:
        resp = pb.LeaseLeasesResponse()
        self.header(resp.header)
        for lease_id in sorted(self.etcd.leases.leases):
            resp.leases.add(ID=lease_id)
        return resp
