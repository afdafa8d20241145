"""Splits as TiKV and PD's simulator report them, hand-encoded: the new regions'
heartbeats (before or after the parent's) and ReportBatchSplit (before or after
the heartbeats) must all end with every region in PD's view."""

from __future__ import annotations

import logging

import pytest

from pdcore.app import PdServer
from pdcore.proto import metapb_pb2, pdpb_pb2
from tests.support.pdclient import PdTestClient, send_heartbeats


async def _three_stores(client: PdTestClient) -> tuple[list[int], metapb_pb2.Region]:
    """A bootstrapped cluster whose one region has a peer on each of three stores."""
    store_id, region_id, peer_id = await client.bootstrap()
    stores = [store_id]
    for port in (20161, 20162):
        sid = await client.alloc_id()
        assert not (await client.put_store(sid, f"127.0.0.1:{port}")).header.HasField("error")
        stores.append(sid)
    peers = [metapb_pb2.Peer(id=peer_id, store_id=store_id)]
    peers += [metapb_pb2.Peer(id=await client.alloc_id(), store_id=s) for s in stores[1:]]
    parent = metapb_pb2.Region(
        id=region_id, region_epoch=metapb_pb2.RegionEpoch(conf_ver=3, version=1), peers=peers
    )
    assert await send_heartbeats(client, client.heartbeat(parent, peers[0])) == []
    return stores, parent


async def _ask_split(
    client: PdTestClient, parent: metapb_pb2.Region, count: int
) -> list[pdpb_pb2.SplitID]:
    ask = await client.stub.AskBatchSplit(
        pdpb_pb2.AskBatchSplitRequest(header=client.header(), region=parent, split_count=count)
    )
    assert not ask.header.HasField("error"), ask.header.error
    return list(ask.ids)


def _split(
    parent: metapb_pb2.Region, ids: list[pdpb_pb2.SplitID], keys: list[bytes]
) -> list[metapb_pb2.Region]:
    """TiKV's batch split with right-derive: new regions on the left in key order,
    the parent keeps its id on the right; every version is bumped by the count."""
    version = parent.region_epoch.version + len(ids)
    epoch = metapb_pb2.RegionEpoch(conf_ver=parent.region_epoch.conf_ver, version=version)
    bounds = [parent.start_key, *keys, parent.end_key]
    out = []
    for i, split in enumerate(ids):
        peers = [
            metapb_pb2.Peer(id=pid, store_id=p.store_id)
            for pid, p in zip(split.new_peer_ids, parent.peers, strict=True)
        ]
        out.append(
            metapb_pb2.Region(
                id=split.new_region_id,
                start_key=bounds[i],
                end_key=bounds[i + 1],
                region_epoch=epoch,
                peers=peers,
            )
        )
    right = metapb_pb2.Region()
    right.CopyFrom(parent)
    right.start_key = bounds[-2]
    right.region_epoch.CopyFrom(epoch)
    return [*out, right]


async def _report(client: PdTestClient, regions: list[metapb_pb2.Region]) -> None:
    resp = await client.stub.ReportBatchSplit(
        pdpb_pb2.ReportBatchSplitRequest(header=client.header(), regions=regions)
    )
    assert not resp.header.HasField("error"), resp.header.error


def _layout(server: PdServer) -> list[tuple[int, bytes, bytes, int]]:
    return [(r.id, r.start_key, r.end_key, r.epoch.version) for r in server.node.tree]


@pytest.mark.parametrize("report_first", [True, False])
@pytest.mark.parametrize("new_regions_first", [True, False])
async def test_batch_split_in_any_order(
    server: PdServer, client: PdTestClient, report_first: bool, new_regions_first: bool
) -> None:
    _, parent = await _three_stores(client)
    regions = _split(parent, await _ask_split(client, parent, 2), [b"g", b"p"])
    beats = [client.heartbeat(r, r.peers[1]) for r in regions]  # leaders on the 2nd store
    if not new_regions_first:
        beats = [beats[-1], *beats[:-1]]
    if report_first:
        await _report(client, regions)
    assert await send_heartbeats(client, *beats) == []
    if not report_first:
        await _report(client, regions)
    assert _layout(server) == [(r.id, r.start_key, r.end_key, 3) for r in regions]
    stats = server.node.tree.store_stats(regions[0].peers[1].store_id)
    assert (stats.region_count, stats.leader_count) == (3, 3)
    # The parent's older report, arriving late, is refused and changes nothing.
    late = await send_heartbeats(client, client.heartbeat(parent, parent.peers[0]))
    assert len(late) == 1 and "stale" in late[0]
    assert len(server.node.tree) == 3


async def test_simulator_split_with_parents_leader_peer_id(
    server: PdServer, client: PdTestClient
) -> None:
    """PD's simulator clones the parent for the new region and renumbers only the
    peer list: the leader it reports keeps the parent's peer id. Go PD takes the
    region; so must we, with the new peer on that store as its leader."""
    _, parent = await _three_stores(client)
    left, right = _split(parent, await _ask_split(client, parent, 1), [b"m"])
    old_leader = parent.peers[0]
    beats = [client.heartbeat(left, old_leader), client.heartbeat(right, old_leader)]
    assert await send_heartbeats(client, *beats) == []
    assert _layout(server) == [(left.id, b"", b"m", 2), (parent.id, b"m", b"", 2)]
    got = server.node.tree.get(left.id)
    assert got is not None and got.leader is not None
    assert (got.leader.id, got.leader.store_id) == (left.peers[0].id, old_leader.store_id)
    # Later heartbeats of the same region take the fast path (nothing re-ingested).
    unchanged = server.node.stats.region_heartbeats_unchanged
    assert await send_heartbeats(client, client.heartbeat(left, old_leader)) == []
    assert server.node.stats.region_heartbeats_unchanged == unchanged + 1


async def test_split_rejections_are_logged_and_counted(
    server: PdServer, client: PdTestClient, caplog: pytest.LogCaptureFixture
) -> None:
    _, parent = await _three_stores(client)
    left, right = _split(parent, await _ask_split(client, parent, 1), [b"m"])
    fourth = await client.alloc_id()
    assert not (await client.put_store(fourth, "127.0.0.1:20163")).header.HasField("error")
    before = server.node.stats.region_heartbeats_rejected
    stranger = metapb_pb2.Peer(id=await client.alloc_id(), store_id=fourth)  # holds no peer of it
    with caplog.at_level(logging.WARNING, logger="kubepd.node"):
        errors = await send_heartbeats(client, client.heartbeat(left, stranger))
    assert len(errors) == 1 and "not one of its peers" in errors[0]
    assert server.node.stats.region_heartbeats_rejected == before + 2  # and the probe
    assert any(
        "region heartbeat rejected" in r.getMessage() and "not one of its peers" in r.getMessage()
        for r in caplog.records
    )
    assert server.node.tree.get(left.id) is None
    # A report whose regions do not tile a range is refused (PD: "invalid split region").
    bad = await client.stub.ReportBatchSplit(
        pdpb_pb2.ReportBatchSplitRequest(header=client.header(), regions=[right, left])
    )
    assert "invalid split region" in bad.header.error.message
