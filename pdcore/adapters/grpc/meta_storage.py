"""The `meta_storagepb.MetaStorage` service TiKV uses for resource control.

kubepd has no resource groups, so Get answers an empty result with a revision and
Watch stays open and idle until the client leaves — what TiKV expects from a PD
without resource groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pdcore.adapters.grpc.errors import Ctx
from pdcore.proto import meta_storagepb_pb2, meta_storagepb_pb2_grpc
from pdcore.service.node import PdNode

REVISION = 1


class MetaStorageService(meta_storagepb_pb2_grpc.MetaStorageServicer):  # type: ignore[misc]
    def __init__(self, node: PdNode) -> None:
        self.node = node

    async def Get(self, request: Any, context: Ctx) -> Any:
        resp = meta_storagepb_pb2.GetResponse(count=0, more=False)
        resp.header.cluster_id = self.node.cluster_id
        resp.header.revision = REVISION
        return resp

    async def Watch(self, request: Any, context: Ctx) -> AsyncIterator[Any]:
        resp = meta_storagepb_pb2.WatchResponse()
        resp.header.cluster_id = self.node.cluster_id
        resp.header.revision = REVISION
        yield resp
        await asyncio.Event().wait()  # idle until the client cancels
