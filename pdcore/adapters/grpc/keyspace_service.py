"""The `keyspacepb.Keyspace` service: LoadKeyspace, WatchKeyspaces, UpdateKeyspaceState,
GetAllKeyspaces, answered from the KeyspaceManager.

Reads come from the member's own view. UpdateKeyspaceState is a write: the pd-leader
does it; any other member passes the request on to the pd-leader unchanged when it is
given a way to reach it (`leader`), as the sidecars do for PD's other writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from pdcore.adapters.grpc.errors import Ctx, unary
from pdcore.domain.errors import ClusterIdMismatch, InvalidValue, NotLeader
from pdcore.domain.keyspace import Keyspace, KeyspaceState
from pdcore.proto import keyspacepb_pb2, keyspacepb_pb2_grpc, pdpb_pb2
from pdcore.service.keyspaces import KeyspaceManager

LeaderChannel = Callable[[], grpc.aio.Channel]


def keyspace_pb(k: Keyspace, out: Any) -> Any:
    out.id = k.id
    out.name = k.name
    out.state = int(k.state)
    out.created_at = k.created_at
    out.state_changed_at = k.state_changed_at
    out.config.update(k.config)
    return out


class _Cluster:
    """What the `unary` wrapper reads: the cluster id to answer with."""

    def __init__(self, cluster_id: Callable[[], int]) -> None:
        self._cluster_id = cluster_id

    @property
    def cluster_id(self) -> int:
        return self._cluster_id()


class KeyspaceService(keyspacepb_pb2_grpc.KeyspaceServicer):  # type: ignore[misc]
    def __init__(
        self,
        keyspaces: KeyspaceManager,
        cluster_id: Callable[[], int],
        started: Callable[[], bool],
        leader: LeaderChannel | None = None,
    ) -> None:
        self.keyspaces = keyspaces
        self.node = _Cluster(cluster_id)
        self._started = started
        self._leader = leader

    def validate(self, header: pdpb_pb2.RequestHeader) -> None:
        if not self._started():
            raise NotLeader("server not started")
        if header.cluster_id != self.node.cluster_id:
            raise ClusterIdMismatch(self.node.cluster_id, header.cluster_id)

    def _header(self, out: pdpb_pb2.ResponseHeader) -> None:
        out.cluster_id = self.node.cluster_id

    @unary(keyspacepb_pb2.LoadKeyspaceResponse)
    async def LoadKeyspace(self, request: Any, context: Ctx) -> Any:
        resp = keyspacepb_pb2.LoadKeyspaceResponse()
        keyspace_pb(self.keyspaces.by_name(request.name), resp.keyspace)
        self._header(resp.header)
        return resp

    @unary(keyspacepb_pb2.GetAllKeyspacesResponse)
    async def GetAllKeyspaces(self, request: Any, context: Ctx) -> Any:
        resp = keyspacepb_pb2.GetAllKeyspacesResponse()
        for k in self.keyspaces.range(request.start_id, request.limit):
            keyspace_pb(k, resp.keyspaces.add())
        self._header(resp.header)
        return resp

    @unary(keyspacepb_pb2.UpdateKeyspaceStateResponse)
    async def UpdateKeyspaceState(self, request: Any, context: Ctx) -> Any:
        if request.state not in KeyspaceState._value2member_map_:
            raise InvalidValue(f"illegal keyspace state {request.state}")
        try:
            k = await self.keyspaces.update_state(request.id, KeyspaceState(request.state))
        except NotLeader:
            if self._leader is None:
                raise
            stub = keyspacepb_pb2_grpc.KeyspaceStub(self._leader())
            try:
                return await stub.UpdateKeyspaceState(request, timeout=5.0)
            except grpc.aio.AioRpcError as e:
                raise NotLeader(f"pd-leader unreachable: {e.details()}") from None
        resp = keyspacepb_pb2.UpdateKeyspaceStateResponse()
        keyspace_pb(k, resp.keyspace)
        self._header(resp.header)
        return resp

    async def WatchKeyspaces(self, request: Any, context: Ctx) -> AsyncIterator[Any]:
        try:
            self.validate(request.header)
        except NotLeader as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except ClusterIdMismatch as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        async for batch in self.keyspaces.watch():
            resp = keyspacepb_pb2.WatchKeyspacesResponse()
            self._header(resp.header)
            for k in batch:
                keyspace_pb(k, resp.keyspaces.add())
            yield resp
