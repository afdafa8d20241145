"""`kubepdpb.Leader`: what a scheduler outside the pd-leader needs besides PD's region
sync — the stores with their latest heartbeat figures (TiKVStore status is written at
a bounded rate, too seldom for scheduling) and the regions' approximate sizes; and the
client side that reads the sizes into a synced view (a follower sidecar's, the
scheduler host's)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc

from pdcore.adapters import codec
from pdcore.adapters.grpc.errors import Ctx
from pdcore.domain.errors import PdError
from pdcore.domain.region_tree import RegionTree
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc
from pdcore.service.node import PdNode

log = logging.getLogger("kubepd.store_feed")
SIZES_TIMEOUT_S = 5.0


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


async def read_region_sizes(channel: grpc.aio.Channel, cluster_id: int, tree: RegionTree) -> None:
    """Region sizes from the pd-leader (the region sync carries none) into `tree`."""
    try:
        resp = await kubepdpb_pb2_grpc.LeaderStub(channel).GetRegionSizes(
            kubepdpb_pb2.GetRegionSizesRequest(cluster_id=cluster_id), timeout=SIZES_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as e:
        log.info("region sizes not read: %s", e.details())
        return
    for rs in resp.regions:
        r = tree.get(rs.region_id)
        if r is not None and (r.approximate_size, r.approximate_keys) != (
            rs.approximate_size_mib,
            rs.approximate_keys,
        ):
            with contextlib.suppress(PdError):
                tree.put(
                    r.with_(
                        approximate_size=rs.approximate_size_mib,
                        approximate_keys=rs.approximate_keys,
                    )
                )
