"""PD's scheduling-side HTTP API against the embedded server: hot regions as PD's
per-store maps, evict-leader removal as pd-ctl sends it, placement rules shown in
PD's JSON (their writes: test_http_rules)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from pdcore.app import PdServer
from pdcore.proto import metapb_pb2, pdpb_pb2
from tests.support.http_api import DEFAULT_RULE, call
from tests.support.pdclient import PdTestClient, send_heartbeats


@pytest.fixture
async def http(server: PdServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://{server.status_address}/pd/api/v1/") as s:
        yield s


async def _three_peer_region(client: PdTestClient) -> tuple[list[int], metapb_pb2.Region]:
    store_id, region_id, peer_id = await client.bootstrap()
    stores = [store_id]
    for port in (20161, 20162):
        sid = await client.alloc_id()
        await client.put_store(sid, f"127.0.0.1:{port}")
        stores.append(sid)
    peers = [metapb_pb2.Peer(id=peer_id, store_id=store_id)]
    peers += [metapb_pb2.Peer(id=await client.alloc_id(), store_id=s) for s in stores[1:]]
    region = metapb_pb2.Region(
        id=region_id, region_epoch=metapb_pb2.RegionEpoch(conf_ver=3, version=1), peers=peers
    )
    return stores, region


async def test_hot_regions_are_per_store_maps(
    client: PdTestClient, http: aiohttp.ClientSession
) -> None:
    stores, region = await _three_peer_region(client)
    beat = client.heartbeat(region, region.peers[0])
    beat.bytes_written, beat.keys_written, beat.bytes_read = 10 << 20, 1000, 4 << 20
    beat.interval.CopyFrom(pdpb_pb2.TimeInterval(start_timestamp=100, end_timestamp=110))
    assert await send_heartbeats(client, beat) == []
    write = await call(http, "GET", "hotspot/regions/write")
    assert set(write["as_peer"]) == {str(s) for s in stores}  # writes land on every peer
    assert set(write["as_leader"]) == {str(stores[0])}
    leader = write["as_leader"][str(stores[0])]
    assert leader["regions_count"] == 1 and leader["total_flow_bytes"] > 0
    (stat,) = leader["statistics"]
    assert stat["region_id"] == region.id and stat["is_leader"] is True
    assert stat["stores"] == sorted(stores) and stat["flow_bytes"] == leader["total_flow_bytes"]
    follower = write["as_peer"][str(stores[1])]["statistics"][0]
    assert follower["is_leader"] is False and follower["store_id"] == stores[1]
    read = await call(http, "GET", "hotspot/regions/read")
    assert set(read["as_peer"]) == set(read["as_leader"]) == {str(stores[0])}
    only = await call(http, "GET", f"hotspot/regions/write?store_id={stores[2]}")
    assert set(only["as_peer"]) == {str(stores[2])} and only["as_leader"] == {}
    assert "invalid store id" in await call(
        http, "GET", "hotspot/regions/write?store_id=x", status=400
    )
    assert await call(http, "GET", "hotspot/regions/history") == {"history_hot_region": []}
    hot_stores = await call(http, "GET", "hotspot/stores")
    assert set(hot_stores["bytes-write-rate"]) == {str(s) for s in stores}


@pytest.mark.parametrize(
    "remove",
    [
        ("DELETE", "schedulers/evict-leader-scheduler-{store}"),
        ("DELETE", "scheduler-config/evict-leader-scheduler/delete/{store}"),  # pd-ctl's
        ("DELETE", "schedulers/evict-leader-scheduler"),  # all of them, as in PD
    ],
)
async def test_evict_leader_removed_as_pd_ctl_asks(
    server: PdServer, client: PdTestClient, http: aiohttp.ClientSession, remove: tuple[str, str]
) -> None:
    stores, _ = await _three_peer_region(client)
    await call(
        http, "POST", "schedulers", {"name": "evict-leader-scheduler", "store_id": stores[1]}
    )
    assert f"evict-leader-scheduler-{stores[1]}" in await call(http, "GET", "schedulers")
    method, path = remove
    assert await call(http, method, path.format(store=stores[1])) == "The scheduler is removed."
    assert not any(n.startswith("evict-leader") for n in await call(http, "GET", "schedulers"))
    again = await call(http, method, path.format(store=stores[1]), status=404)
    assert "not found" in again


async def test_evict_leader_one_store_of_several(
    server: PdServer, client: PdTestClient, http: aiohttp.ClientSession
) -> None:
    stores, _ = await _three_peer_region(client)
    name = f"evict-leader-scheduler-{stores[0]}"
    await call(
        http, "POST", "schedulers", {"name": "evict-leader-scheduler", "store_id": stores[0]}
    )
    await call(http, "POST", f"scheduler-config/{name}/config", {"store_id": stores[2]})
    assert await call(http, "GET", f"scheduler-config/{name}/list") == {
        "store-id-ranges": {str(stores[0]): [], str(stores[2]): []},
        "batch": 3,
    }
    done = await call(http, "DELETE", f"schedulers/evict-leader-scheduler-{stores[2]}")
    assert done == "The scheduler has been applied to the store."
    config = await call(http, "GET", f"scheduler-config/{name}/list")
    assert config["store-id-ranges"] == {str(stores[0]): []}


async def test_placement_rules_shown(
    server: PdServer, client: PdTestClient, http: aiohttp.ClientSession
) -> None:
    _, region = await _three_peer_region(client)
    assert await send_heartbeats(client, client.heartbeat(region, region.peers[0])) == []
    default = DEFAULT_RULE
    assert await call(http, "GET", "config/rules") == [default]
    assert await call(http, "GET", "config/rule/pd/default") == default
    assert await call(http, "GET", "config/rules/group/pd") == [default]
    assert await call(http, "GET", f"config/rules/region/{region.id}") == [default]
    assert await call(http, "GET", "config/rule_groups") == [{"id": "pd"}]
    bundles = await call(http, "GET", "config/placement-rule")
    assert bundles == [
        {"group_id": "pd", "group_index": 0, "group_override": False, "rules": [default]}
    ]
    assert "not found" in await call(http, "GET", "config/rule/pd/nope", status=404)
    assert "not found" in await call(http, "GET", "config/rules/region/999999", status=404)
    # Rules follow the replication config, PD's default rule.
    await call(http, "POST", "config/replicate", {"max-replicas": 5})
    assert (await call(http, "GET", "config/rules"))[0]["count"] == 5
    # One region of three peers: replicated as 3, short of replicas as 5.
    assert await call(http, "GET", "regions/replicated?startKey=&endKey=") in (
        "INPROGRESS",
        "PENDING",
    )
    await call(http, "POST", "config/replicate", {"max-replicas": 3})
    assert await call(http, "GET", "regions/replicated?startKey=&endKey=") == "REPLICATED"
    assert "hex" in await call(http, "GET", "regions/replicated?startKey=zz", status=400)
    assert await call(http, "GET", "config/region-label/rules") == []
    assert await call(http, "POST", "config/region-label/rule", {"id": "x"}, status=400)


async def test_operators_as_pd_objects_and_deleted(
    client: PdTestClient, http: aiohttp.ClientSession
) -> None:
    stores, region = await _three_peer_region(client)
    assert await send_heartbeats(client, client.heartbeat(region, region.peers[0])) == []
    body = {"name": "transfer-leader", "region_id": region.id, "to_store_id": stores[1]}
    assert await call(http, "POST", "operators", body) == "The operator is created."
    (op,) = await call(http, "GET", "operators?object")
    assert op["region_id"] == region.id and op["desc"] == "transfer-leader"
    assert op["region_epoch"] == {"conf_ver": 3, "version": 1}
    assert "admin" in op["kind"].split(",") and "leader" in op["kind"].split(",")
    assert op["timeout"].endswith("s") and op["status"] in ("CREATED", "STARTED")
    assert len(await call(http, "GET", "operators?kind=admin")) == 1
    assert await call(http, "GET", "operators?kind=region") == []
    assert await call(http, "DELETE", "operators") == "All pending operators are canceled."
    assert await call(http, "GET", "operators") == []
