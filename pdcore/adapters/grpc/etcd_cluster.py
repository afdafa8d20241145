"""The etcd `Cluster.MemberList` and `Maintenance.Alarm`/`Status` calls: this PD
member, as the one etcd member and its leader (etcdctl's member list, endpoint
status and endpoint health)."""

from __future__ import annotations

import grpc

from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.grpc.etcd_common import EtcdServicer, etcd_unary
from pdcore.proto import etcdserverpb_pb2 as pb
from pdcore.proto import etcdserverpb_pb2_grpc

ETCD_VERSION = "3.5.0"  # the etcd API level served (what PD 8.x embeds)


class ClusterService(EtcdServicer, etcdserverpb_pb2_grpc.ClusterServicer):  # type: ignore[misc]
    @etcd_unary
    async def MemberList(
        self, request: pb.MemberListRequest, context: Ctx
    ) -> pb.MemberListResponse:
        m = self.etcd.node.member
        resp = pb.MemberListResponse()
        self.header(resp.header)
        resp.members.add(
            ID=m.member_id,
            name=m.name,
            peerURLs=list(m.peer_urls or m.client_urls),
            clientURLs=list(m.client_urls),
        )
        return resp


class MaintenanceService(EtcdServicer, etcdserverpb_pb2_grpc.MaintenanceServicer):  # type: ignore[misc]
    @etcd_unary
    async def Alarm(self, request: pb.AlarmRequest, context: Ctx) -> pb.AlarmResponse:
        """No alarms are ever raised (etcdctl endpoint health lists them); raising
        one by hand is refused rather than silently ignored."""
        if request.action != pb.AlarmRequest.GET:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "kubepd: etcd alarms cannot be set or cleared"
            )
        resp = pb.AlarmResponse()
        self.header(resp.header)
        return resp

    @etcd_unary
    async def Status(self, request: pb.StatusRequest, context: Ctx) -> pb.StatusResponse:
        rev = self.etcd.mvcc.revision
        size = self.etcd.mvcc.size_bytes()
        resp = pb.StatusResponse(
            version=ETCD_VERSION,
            leader=self.etcd.node.member.member_id,
            raftIndex=rev,
            raftTerm=1,
            raftAppliedIndex=rev,
            dbSize=size,
            dbSizeInUse=size,
        )
        self.header(resp.header)
        return resp
