"""A small PD client for tests, on our own generated stubs: the TiKV side of bootstrap,
store registration and heartbeats, used where the official Go client has no API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from pdcore.proto import metapb_pb2, pdpb_pb2, pdpb_pb2_grpc


def bootstrap_request(
    header: pdpb_pb2.RequestHeader,
    store_id: int,
    region_id: int,
    peer_id: int,
    address: str = "127.0.0.1:20160",
) -> pdpb_pb2.BootstrapRequest:
    """What TiKV sends first: its store and the one region covering every key."""
    return pdpb_pb2.BootstrapRequest(
        header=header,
        store=metapb_pb2.Store(id=store_id, address=address, version="8.5.0"),
        region=metapb_pb2.Region(
            id=region_id,
            region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
            peers=[metapb_pb2.Peer(id=peer_id, store_id=store_id)],
        ),
    )


class PdTestClient:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pdpb_pb2_grpc.PDStub(self.channel)
        self.cluster_id = 0

    async def connect(self) -> int:
        resp = await self.stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=5)
        self.cluster_id = resp.header.cluster_id
        return self.cluster_id

    def header(self, cluster_id: int | None = None) -> pdpb_pb2.RequestHeader:
        return pdpb_pb2.RequestHeader(
            cluster_id=self.cluster_id if cluster_id is None else cluster_id
        )

    async def alloc_id(self, count: int = 1) -> int:
        resp = await self.stub.AllocID(pdpb_pb2.AllocIDRequest(header=self.header(), count=count))
        assert not resp.header.HasField("error"), resp.header.error
        return int(resp.id)

    async def bootstrap(self, address: str = "127.0.0.1:20160") -> tuple[int, int, int]:
        """Bootstrap like TiKV: ids for store, region and peer, then Bootstrap."""
        store_id = await self.alloc_id()
        region_id = await self.alloc_id()
        peer_id = await self.alloc_id()
        resp = await self.stub.Bootstrap(
            bootstrap_request(self.header(), store_id, region_id, peer_id, address)
        )
        assert not resp.header.HasField("error"), resp.header.error
        return store_id, region_id, peer_id

    async def put_store(
        self, store_id: int, address: str, **labels: str
    ) -> pdpb_pb2.PutStoreResponse:
        store = metapb_pb2.Store(
            id=store_id,
            address=address,
            version="8.5.0",
            labels=[metapb_pb2.StoreLabel(key=k, value=v) for k, v in labels.items()],
        )
        resp: pdpb_pb2.PutStoreResponse = await self.stub.PutStore(
            pdpb_pb2.PutStoreRequest(header=self.header(), store=store)
        )
        return resp

    def heartbeat(
        self, region: metapb_pb2.Region, leader: metapb_pb2.Peer, size_mib: int = 1
    ) -> pdpb_pb2.RegionHeartbeatRequest:
        return pdpb_pb2.RegionHeartbeatRequest(
            header=self.header(),
            region=region,
            leader=leader,
            approximate_size=size_mib << 20,
        )


async def one_by_one(
    *items: pdpb_pb2.RegionHeartbeatRequest,
) -> AsyncIterator[pdpb_pb2.RegionHeartbeatRequest]:
    for item in items:
        yield item


async def send_heartbeats(
    client: PdTestClient, *reqs: pdpb_pb2.RegionHeartbeatRequest
) -> list[str]:
    """Send `reqs` on one stream, then a probe PD must reject; the probe's answer
    comes after every earlier one (one stream is handled in order), so the errors
    returned before it are all the rejections of `reqs`."""
    probe = pdpb_pb2.RegionHeartbeatRequest(
        header=client.header(), region=metapb_pb2.Region(id=1 << 60)
    )
    call = client.stub.RegionHeartbeat(one_by_one(*reqs, probe))
    errors: list[str] = []
    async for resp in call:
        message = resp.header.error.message
        if "no leader" in message and str(1 << 60) in message:
            break
        errors.append(message)
    call.cancel()
    return errors
