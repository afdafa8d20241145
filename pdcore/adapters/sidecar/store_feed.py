"""`kubepdpb.Leader`: what a scheduler outside the pd-leader needs besides PD's region
sync — the stores with their latest heartbeat figures (TiKVStore status is written at
a bounded rate, too seldom for scheduling) and the regions' approximate sizes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from pdcore.adapters import codec
from pdcore.adapters.grpc.errors import Ctx
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc
from pdcore.service.node import PdNode


class StoreFeed(kubepdpb_pb2_grpc.LeaderServicer):  # type: ignore[misc]
    def __init__(self, node: PdNode, is_leader: Callable[[], bool]) -> None:
        self.node = node
        self.is_leader = is_leader

    async def _check(self, request: Any, context: Ctx) -> None:
        if request.cluster_id != self.node.cluster_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cluster id mismatch: this cluster is {self.node.cluster_id}",
            )
        if not self.is_leader():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not the pd-leader")

    async def GetRegionSizes(self, request: Any, context: Ctx) -> Any:
        await self._check(request, context)
        return kubepdpb_pb2.GetRegionSizesResponse(
            regions=[
                kubepdpb_pb2.RegionSize(
                    region_id=r.id,
                    approximate_size_mib=r.approximate_size,
                    approximate_keys=r.approximate_keys,
                )
                for r in self.node.tree
            ]
        )

    async def GetStores(self, request: Any, context: Ctx) -> Any:
        await self._check(request, context)
        return kubepdpb_pb2.GetStoresResponse(
            stores=[codec.store_info_to_pb(s) for s in self.node.stores()]
        )
