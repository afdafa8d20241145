"""The PD gRPC API over real sockets: PD's semantics and PD's errors for bad input."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from pdcore.app import PdServer
from pdcore.proto import metapb_pb2, pdpb_pb2
from tests.support.pdclient import PdTestClient, one_by_one


def err(resp: object) -> int:
    header = resp.header  # type: ignore[attr-defined]
    return int(header.error.type) if header.HasField("error") else 0


async def test_members_and_cluster_info(server: PdServer, client: PdTestClient) -> None:
    resp = await client.stub.GetMembers(pdpb_pb2.GetMembersRequest())
    assert resp.header.cluster_id == server.node.cluster_id != 0  # type: ignore[union-attr]
    assert resp.leader.client_urls == [f"http://{server.client_address}"]
    assert [m.name for m in resp.members] == ["pd-e2e"]
    info = await client.stub.GetClusterInfo(pdpb_pb2.GetClusterInfoRequest())
    assert list(info.serviceModes) == [pdpb_pb2.PD_SVC_MODE]


async def test_wrong_cluster_id_is_failed_precondition(client: PdTestClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.stub.IsBootstrapped(pdpb_pb2.IsBootstrappedRequest(header=client.header(42)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "mismatch cluster id" in (e.value.details() or "")
    call = client.stub.Tso()
    await call.write(pdpb_pb2.TsoRequest(header=client.header(42), count=1))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call.read()
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_unbootstrapped_calls(client: PdTestClient) -> None:
    h = client.header()
    assert not (
        await client.stub.IsBootstrapped(pdpb_pb2.IsBootstrappedRequest(header=h))
    ).bootstrapped
    for call, req in [
        (client.stub.GetStore, pdpb_pb2.GetStoreRequest(header=h, store_id=1)),
        (client.stub.GetAllStores, pdpb_pb2.GetAllStoresRequest(header=h)),
        (client.stub.GetRegion, pdpb_pb2.GetRegionRequest(header=h, region_key=b"a")),
        (client.stub.GetClusterConfig, pdpb_pb2.GetClusterConfigRequest(header=h)),
        (client.stub.GetGCSafePoint, pdpb_pb2.GetGCSafePointRequest(header=h)),
        (
            client.stub.PutStore,
            pdpb_pb2.PutStoreRequest(header=h, store=metapb_pb2.Store(id=1, address="a:1")),
        ),
    ]:
        assert err(await call(req)) == pdpb_pb2.NOT_BOOTSTRAPPED, call


async def test_bootstrap_then_lookups(client: PdTestClient) -> None:
    store_id, region_id, peer_id = await client.bootstrap()
    h = client.header()
    again = await client.stub.Bootstrap(
        pdpb_pb2.BootstrapRequest(
            header=h,
            store=metapb_pb2.Store(id=99, address="x:1"),
            region=metapb_pb2.Region(id=98, peers=[metapb_pb2.Peer(id=97, store_id=99)]),
        )
    )
    assert err(again) == pdpb_pb2.ALREADY_BOOTSTRAPPED
    region = await client.stub.GetRegion(pdpb_pb2.GetRegionRequest(header=h, region_key=b"k"))
    assert region.region.id == region_id and region.region.peers[0].id == peer_id
    by_id = await client.stub.GetRegionByID(
        pdpb_pb2.GetRegionByIDRequest(header=h, region_id=12345)
    )
    assert err(by_id) == 0 and not by_id.HasField("region")  # not found: empty, no error
    store = await client.stub.GetStore(pdpb_pb2.GetStoreRequest(header=h, store_id=store_id))
    assert store.store.address == "127.0.0.1:20160"
    unknown = await client.stub.GetStore(pdpb_pb2.GetStoreRequest(header=h, store_id=777))
    assert err(unknown) == pdpb_pb2.UNKNOWN and "777" in unknown.header.error.message
    cfg = await client.stub.GetClusterConfig(pdpb_pb2.GetClusterConfigRequest(header=h))
    assert cfg.cluster.max_peer_count == 3


async def test_tso_batches_and_ordering(server: PdServer, client: PdTestClient) -> None:
    call = client.stub.Tso()
    last = 0
    for count in (1, 10, 1000, 3):
        await call.write(pdpb_pb2.TsoRequest(header=client.header(), count=count))
        resp = await call.read()
        assert resp.count == count
        ts = (resp.timestamp.physical << 18) | resp.timestamp.logical
        assert ts - count + 1 > last
        last = ts
    await call.done_writing()
    assert server.pd_service is not None and server.pd_service.tso_fast_streams == 1


async def test_tso_errors_end_the_stream_with_pds_status(
    server: PdServer, client: PdTestClient
) -> None:
    node = server.node
    assert node is not None
    for count, is_leader, code, text in [
        (0, True, grpc.StatusCode.UNKNOWN, "tso count should be positive"),
        (1 << 18, True, grpc.StatusCode.UNKNOWN, "exceeds"),
        (1, False, grpc.StatusCode.UNAVAILABLE, ""),
    ]:
        node.state.is_leader = lambda leader=is_leader: leader  # type: ignore[misc]
        call = client.stub.Tso()
        await call.write(pdpb_pb2.TsoRequest(header=client.header(), count=count))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call.read()
        assert e.value.code() == code and text in (e.value.details() or "")
    node.state.is_leader = lambda: True
    call = client.stub.Tso()
    await call.write(pdpb_pb2.TsoRequest(header=client.header(), count=1))
    assert (await call.read()).count == 1
    await call.done_writing()


async def test_alloc_id_unique(client: PdTestClient) -> None:
    got: list[int] = []
    for count in (1, 5, 1, 2000):
        last = await client.alloc_id(count)
        got.extend(range(last - count + 1, last + 1))
    assert len(set(got)) == len(got)


async def _heartbeat_stream(
    client: PdTestClient, *reqs: pdpb_pb2.RegionHeartbeatRequest, expect: int
) -> list[pdpb_pb2.RegionHeartbeatResponse]:
    call = client.stub.RegionHeartbeat(one_by_one(*reqs))
    out = []
    async for resp in call:
        out.append(resp)
        if len(out) == expect:
            call.cancel()
            break
    return out


async def test_bad_heartbeats_get_errors_and_change_nothing(
    server: PdServer, client: PdTestClient
) -> None:
    store_id, region_id, peer_id = await client.bootstrap()
    leader = metapb_pb2.Peer(id=peer_id, store_id=store_id)

    def region(**kw: object) -> metapb_pb2.Region:
        base = dict(
            id=region_id, region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=5), peers=[leader]
        )
        base.update(kw)
        return metapb_pb2.Region(**base)  # type: ignore[arg-type]

    good = client.heartbeat(region(), leader)
    stale = client.heartbeat(
        region(region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=4)), leader
    )
    no_peers = client.heartbeat(
        region(peers=[], region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=6)), leader
    )
    bad_range = client.heartbeat(
        region(
            start_key=b"z", end_key=b"a", region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=7)
        ),
        leader,
    )
    no_leader = pdpb_pb2.RegionHeartbeatRequest(header=client.header(), region=region())
    replies = await _heartbeat_stream(client, good, stale, no_peers, bad_range, no_leader, expect=4)
    messages = [r.header.error.message for r in replies]
    assert all(r.header.error.type == pdpb_pb2.UNKNOWN for r in replies)
    assert "stale" in messages[0] and "no peers" in messages[1]
    assert "not below" in messages[2] and "no leader" in messages[3]
    assert server.node.tree.get(region_id).epoch.version == 5  # type: ignore[union-attr]
    # A heartbeat from a store PD does not know ends the stream with an error.
    stranger = metapb_pb2.Peer(id=4242, store_id=4141)
    replies = await _heartbeat_stream(
        client,
        client.heartbeat(
            metapb_pb2.Region(
                id=888,
                start_key=b"x",
                region_epoch=metapb_pb2.RegionEpoch(version=9),
                peers=[stranger],
            ),
            stranger,
        ),
        expect=1,
    )
    assert "store 4141 not found" in replies[0].header.error.message
    assert server.node.tree.get(888) is None


async def test_split_through_ask_batch_split(server: PdServer, client: PdTestClient) -> None:
    store_id, region_id, peer_id = await client.bootstrap()
    h = client.header()
    epoch = metapb_pb2.RegionEpoch(conf_ver=1, version=1)
    parent = metapb_pb2.Region(
        id=region_id, region_epoch=epoch, peers=[metapb_pb2.Peer(id=peer_id, store_id=store_id)]
    )
    ask = await client.stub.AskBatchSplit(
        pdpb_pb2.AskBatchSplitRequest(header=h, region=parent, split_count=1)
    )
    assert err(ask) == 0 and len(ask.ids) == 1 and len(ask.ids[0].new_peer_ids) == 1
    new_id, new_peer = ask.ids[0].new_region_id, ask.ids[0].new_peer_ids[0]
    left = metapb_pb2.Region(
        id=new_id,
        end_key=b"m",
        region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=2),
        peers=[metapb_pb2.Peer(id=new_peer, store_id=store_id)],
    )
    right = metapb_pb2.Region(
        id=region_id,
        start_key=b"m",
        region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=2),
        peers=[metapb_pb2.Peer(id=peer_id, store_id=store_id)],
    )
    rep = await client.stub.ReportBatchSplit(
        pdpb_pb2.ReportBatchSplitRequest(header=h, regions=[left, right])
    )
    assert err(rep) == 0
    call = client.stub.RegionHeartbeat(
        one_by_one(client.heartbeat(left, left.peers[0]), client.heartbeat(right, right.peers[0]))
    )
    for _ in range(50):
        if len(server.node.tree) == 2:
            break
        await asyncio.sleep(0.02)
    call.cancel()
    scan = await client.stub.ScanRegions(pdpb_pb2.ScanRegionsRequest(header=h, start_key=b""))
    assert [r.id for r in scan.region_metas] == [new_id, region_id]
    assert [r.region.id for r in scan.regions] == [new_id, region_id]
    prev = await client.stub.GetPrevRegion(pdpb_pb2.GetRegionRequest(header=h, region_key=b"q"))
    assert prev.region.id == new_id
    batch = await client.stub.BatchScanRegions(
        pdpb_pb2.BatchScanRegionsRequest(
            header=h,
            ranges=[
                pdpb_pb2.KeyRange(start_key=b"a", end_key=b"b"),
                pdpb_pb2.KeyRange(start_key=b"n", end_key=b""),
            ],
            contain_all_key_range=True,
        )
    )
    assert [r.region.id for r in batch.regions] == [new_id, region_id]
    bad = await client.stub.BatchScanRegions(
        pdpb_pb2.BatchScanRegionsRequest(
            header=h, ranges=[pdpb_pb2.KeyRange(start_key=b"q", end_key=b"b")]
        )
    )
    assert err(bad) == pdpb_pb2.INVALID_VALUE
    query = client.stub.QueryRegion()
    await query.write(
        pdpb_pb2.QueryRegionRequest(
            header=h, keys=[b"a", b"z"], prev_keys=[b"z"], ids=[region_id, 999]
        )
    )
    qr = await query.read()
    assert list(qr.key_id_map) == [new_id, region_id] and list(qr.prev_key_id_map) == [new_id]
    assert set(qr.regions_by_id) == {new_id, region_id}
    await query.done_writing()


async def test_oversize_message_is_refused(server: PdServer, client: PdTestClient) -> None:
    await client.bootstrap()
    huge = metapb_pb2.Store(id=5, address="a:1", deploy_path="x" * (2 << 20))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.stub.PutStore(pdpb_pb2.PutStoreRequest(header=client.header(), store=huge))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.node.get_store(5) is None  # type: ignore[union-attr]


async def test_unimplemented_answers_at_once(client: PdTestClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.stub.SyncMaxTS(pdpb_pb2.SyncMaxTSRequest(header=client.header()), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_gc_safe_points(client: PdTestClient) -> None:
    await client.bootstrap()
    h = client.header()
    r = await client.stub.UpdateGCSafePoint(
        pdpb_pb2.UpdateGCSafePointRequest(header=h, safe_point=100)
    )
    assert r.new_safe_point == 100
    r = await client.stub.UpdateGCSafePoint(
        pdpb_pb2.UpdateGCSafePointRequest(header=h, safe_point=50)
    )
    assert r.new_safe_point == 100
    assert (
        await client.stub.GetGCSafePoint(pdpb_pb2.GetGCSafePointRequest(header=h))
    ).safe_point == 100
    s = await client.stub.UpdateServiceGCSafePoint(
        pdpb_pb2.UpdateServiceGCSafePointRequest(
            header=h, service_id=b"cdc", TTL=600, safe_point=150
        )
    )
    assert s.min_safe_point == 150 and s.service_id == b"cdc"


async def test_tikv_steady_state_calls(client: PdTestClient) -> None:
    store_id, _, _ = await client.bootstrap()
    h = client.header()
    rec = await client.stub.IsSnapshotRecovering(pdpb_pb2.IsSnapshotRecoveringRequest(header=h))
    assert rec.marked is False
    rts = await client.stub.ReportMinResolvedTS(
        pdpb_pb2.ReportMinResolvedTsRequest(header=h, store_id=store_id, min_resolved_ts=12345)
    )
    assert err(rts) == 0
    hb = await client.stub.StoreHeartbeat(
        pdpb_pb2.StoreHeartbeatRequest(
            header=h,
            stats=pdpb_pb2.StoreStats(store_id=store_id, capacity=100 << 30, available=90 << 30),
        )
    )
    assert err(hb) == 0 and hb.cluster_version == "8.5.0"
    await client.stub.StoreGlobalConfig(
        pdpb_pb2.StoreGlobalConfigRequest(
            config_path="/global/config",
            changes=[pdpb_pb2.GlobalConfigItem(name="k", payload=b"v")],
        )
    )
    loaded = await client.stub.LoadGlobalConfig(
        pdpb_pb2.LoadGlobalConfigRequest(config_path="/global/config", names=["k", "missing"])
    )
    assert loaded.items[0].payload == b"v"
    assert loaded.items[1].error.type == pdpb_pb2.GLOBAL_CONFIG_NOT_FOUND
    watch = client.stub.WatchGlobalConfig(
        pdpb_pb2.WatchGlobalConfigRequest(config_path="/global/config")
    )
    first = await watch.read()
    assert [c.name for c in first.changes] == ["k"]
    watch.cancel()
