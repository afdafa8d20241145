"""PD's HTTP API on the status address, against the embedded server: PD's JSON shapes,
key names, duration strings and status codes (the values PD's own tools read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from pdcore.app import PdServer
from pdcore.proto import metapb_pb2
from tests.support.pdclient import PdTestClient, send_heartbeats

TABLE_KEY = b"t\x80\x00\x00\x00\x00\x00\x00\x01"  # a TiDB table prefix: not UTF-8


@pytest.fixture
async def http(server: PdServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://{server.status_address}") as s:
        yield s


async def _get(http: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    # Sent as written (yarl would re-escape a bad escape such as "%zz").
    async with http.get(URL("/pd/api/v1" + path, encoded=True)) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == status, body
        return body


async def _post(http: aiohttp.ClientSession, path: str, body: Any, status: int = 200) -> Any:
    async with http.post("/pd/api/v1" + path, json=body) as resp:
        out = await resp.json(content_type=None)
        assert resp.status == status, out
        return out


async def _two_regions(client: PdTestClient) -> tuple[int, int]:
    """Regions [, TABLE_KEY) and [TABLE_KEY, ) on one store; returns their ids."""
    store_id, region_id, peer_id = await client.bootstrap()
    new_id, new_peer = await client.alloc_id(), await client.alloc_id()
    epoch = metapb_pb2.RegionEpoch(conf_ver=1, version=2)
    left = metapb_pb2.Region(
        id=new_id,
        end_key=TABLE_KEY,
        region_epoch=epoch,
        peers=[metapb_pb2.Peer(id=new_peer, store_id=store_id)],
    )
    right = metapb_pb2.Region(
        id=region_id,
        start_key=TABLE_KEY,
        region_epoch=epoch,
        peers=[metapb_pb2.Peer(id=peer_id, store_id=store_id)],
    )
    beats = [client.heartbeat(left, left.peers[0]), client.heartbeat(right, right.peers[0])]
    assert await send_heartbeats(client, *beats) == []
    return new_id, region_id


async def test_region_by_binary_key(client: PdTestClient, http: aiohttp.ClientSession) -> None:
    left, right = await _two_regions(client)
    # PD's Go client escapes with url.QueryEscape: every non-ASCII byte as %XX.
    escaped = "t%80%00%00%00%00%00%00%01"
    assert (await _get(http, f"/region/key/{escaped}"))["id"] == right
    assert (await _get(http, "/region/key/t%7F"))["id"] == left
    assert (await _get(http, f"/region/key/{TABLE_KEY.hex()}?format=hex"))["id"] == right
    got = await _get(http, "/region/key/a+b")  # '+' is a space, as in Go's QueryUnescape
    assert (
        got["id"] == left and got["start_key"] == "" and got["end_key"] == TABLE_KEY.hex().upper()
    )
    assert "invalid URL escape" in await _get(http, "/region/key/%zz", 400)
    assert (await _get(http, "/region/key/u%2Fv"))["id"] == right  # an escaped '/' in a key
    # A range scan with binary bounds, and by store.
    scan = await _get(http, f"/regions/key?key={escaped}&limit=5")
    assert scan["count"] == 1 and scan["regions"][0]["id"] == right
    assert (await _get(http, "/regions/key?key=&limit=1"))["count"] == 1


async def test_region_lookups_and_not_found(
    client: PdTestClient, http: aiohttp.ClientSession
) -> None:
    left, right = await _two_regions(client)
    region = await _get(http, f"/region/id/{left}")
    assert region["epoch"] == {"conf_ver": 1, "version": 2}
    peer = region["peers"][0]
    assert peer["role_name"] == "Voter" and "role" not in peer  # PD leaves zero values out
    assert region["leader"]["id"] == peer["id"]
    assert await _get(http, "/region/id/999999", 404) == (
        "[PD:region:ErrRegionNotFound]region 999999 not found"
    )
    assert "invalid syntax" in await _get(http, "/region/id/abc", 400)
    assert (await _get(http, "/regions"))["count"] == 2
    assert await _get(http, "/regions/count") == {"count": 2}
    store_id = peer["store_id"]
    assert (await _get(http, f"/regions/store/{store_id}"))["count"] == 2
    assert (await _get(http, f"/regions/store/{store_id}?type=leader"))["count"] == 2
    assert (await _get(http, "/regions/store/424242"))["count"] == 0
    siblings = await _get(http, f"/regions/sibling/{left}")
    assert [r["id"] for r in siblings["regions"]] == [right]
    assert (await _get(http, "/regions/readflow?limit=1"))["count"] == 1
    assert "invalid syntax" in await _get(http, "/regions/readflow?limit=x", 400)
    assert (await _get(http, "/regions/check/miss-peer"))["count"] == 2  # 1 of 3 replicas
    assert (await _get(http, "/regions/check/down-peer"))["count"] == 0
    stats = await _get(http, "/stats/region?start_key=&end_key=")
    assert stats["count"] == 2 and stats["store_leader_count"] == {str(store_id): 2}


async def test_range_holes(client: PdTestClient, http: aiohttp.ClientSession) -> None:
    store_id, region_id, peer_id = await client.bootstrap()
    assert await _get(http, "/regions/range-holes") == []
    # The parent's report after a split whose new region has not reported yet.
    right = metapb_pb2.Region(
        id=region_id,
        start_key=TABLE_KEY,
        region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=2),
        peers=[metapb_pb2.Peer(id=peer_id, store_id=store_id)],
    )
    assert await send_heartbeats(client, client.heartbeat(right, right.peers[0])) == []
    assert await _get(http, "/regions/range-holes") == [["", TABLE_KEY.hex().upper()]]


async def test_config_show_in_pd_types(client: PdTestClient, http: aiohttp.ClientSession) -> None:
    await client.bootstrap()
    full = await _get(http, "/config")
    sched, repl = full["schedule"], full["replication"]
    assert sched["max-store-down-time"] == "30m0s"
    assert sched["split-merge-interval"] == "1h0m0s"
    assert sched["patrol-region-interval"] == "10ms"
    assert sched["max-store-preparing-time"] == "48h0m0s"
    assert sched["enable-joint-consensus"] == "true" and sched["halt-scheduling"] == "false"
    assert sched["default-store-limit"] == {"add-peer": 15.0, "remove-peer": 15.0}
    assert sched["leader-schedule-limit"] == 4 and sched["low-space-ratio"] == 0.8
    assert repl == {
        "max-replicas": 3,
        "location-labels": "",
        "strictly-match-label": "false",
        "enable-placement-rules": "true",
        "enable-placement-rules-cache": "false",
        "isolation-level": "",
    }
    for key in ("client-urls", "pd-server", "replication-mode", "tso-save-interval", "lease"):
        assert key in full
    assert await _get(http, "/config/schedule") == sched
    assert list(sched["store-limit"].values()) == [{"add-peer": 15.0, "remove-peer": 15.0}]
    # What GET shows, POST takes back unchanged.
    assert await _post(http, "/config/schedule", sched) == "The config is updated."
    assert await _get(http, "/config/replicate") == repl
    assert await _get(http, "/config/cluster-version") == "8.5.0"
    assert await _get(http, "/config/pd-server") == full["pd-server"]


async def test_config_set_as_pd_ctl_and_simulator_send_it(
    server: PdServer, client: PdTestClient, http: aiohttp.ClientSession
) -> None:
    await client.bootstrap()
    # pd-ctl `config set`: numbers as floats, everything else as strings.
    assert await _post(http, "/config", {"leader-schedule-limit": 8.0}) == "The config is updated."
    await _post(http, "/config", {"max-store-down-time": "1h"})
    await _post(http, "/config", {"location-labels": "zone,host"})
    await _post(http, "/config", {"schedule.halt-scheduling": "true"})  # PD's simulator
    await _post(http, "/config", {"enable-placement-rules": "false"})
    cfg = server.node.config
    assert cfg.schedule.leader_schedule_limit == 8
    assert cfg.schedule.max_store_down_time_s == 3600.0
    assert cfg.schedule.halt_scheduling is True
    assert cfg.replication.location_labels == ("zone", "host")
    assert cfg.replication.enable_placement_rules is False
    shown = await _get(http, "/config")
    assert shown["schedule"]["max-store-down-time"] == "1h0m0s"
    assert shown["schedule"]["halt-scheduling"] == "true"
    assert shown["replication"]["location-labels"] == "zone,host"
    # The section endpoints take PD's JSON types too.
    await _post(
        http, "/config/schedule", {"max-snapshot-count": 16, "enable-one-way-merge": "true"}
    )
    await _post(http, "/config/replicate", {"max-replicas": 5})
    assert server.node.config.schedule.max_snapshot_count == 16
    assert server.node.config.schedule.enable_one_way_merge is True
    assert server.node.config.replication.max_replicas == 5
    await _post(http, "/stores/limit", {"rate": 30.0, "type": "add-peer"})
    assert server.node.config.schedule.store_limit_add_peer == 30.0


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/config", {"no-such-item": 1}, "config item no-such-item not found"),
        ("/config", {"foo.bar": 1}, "config prefix foo not found"),
        ("/config", {"max-store-down-time": "30 minutes"}, "invalid duration"),
        ("/config", {"max-store-down-time": 1800}, "cannot unmarshal number"),
        ("/config", {"leader-schedule-limit": "many"}, "cannot unmarshal string"),
        ("/config", {"leader-schedule-limit": 2.5}, "of type uint64"),
        ("/config", {"enable-joint-consensus": "yes"}, "of type bool"),
        ("/config", {"enable-witness": "true"}, "not supported by kubepd"),
        ("/config", [1, 2], "cannot unmarshal"),
        ("/config/schedule", {"max-replicas": 3}, "config item max-replicas not found"),
        ("/config/replicate", {"max-replicas": -1}, "of type uint64"),
        ("/config/cluster-version", {"cluster-version": "9.0.0"}, "cannot be set"),
        ("/config?ttlSecond=60", {"max-merge-region-size": 0}, "TTL"),
        ("/stores/limit", {"type": "add-peer"}, "rate unset"),
        ("/stores/limit", {"rate": 0}, "larger than 0"),
    ],
)
async def test_bad_config_is_400_and_changes_nothing(
    server: PdServer,
    client: PdTestClient,
    http: aiohttp.ClientSession,
    path: str,
    body: Any,
    message: str,
) -> None:
    await client.bootstrap()
    before = server.node.config
    got = await _post(http, path, body, 400)
    assert message in got
    assert server.node.config == before


async def test_store_routes(client: PdTestClient, http: aiohttp.ClientSession) -> None:
    store_id, _, _ = await client.bootstrap()
    other = await client.alloc_id()
    await client.put_store(other, "127.0.0.1:20161", zone="z1", host="h1")
    stores = await _get(http, "/stores")
    assert stores["count"] == 2
    meta = stores["stores"][0]["store"]
    assert meta["id"] == store_id and meta["state_name"] == "Up" and "state" not in meta
    status = stores["stores"][0]["status"]
    assert status["capacity"] == "0B" and status["leader_weight"] == 1.0
    assert await _get(http, "/store/424242", 404) == (
        "[PD:core:ErrStoreNotFound]store 424242 not found"
    )
    assert await _get(http, "/labels") == [
        {"key": "zone", "value": "z1"},
        {"key": "host", "value": "h1"},
    ]
    by_label = await _get(http, "/labels/stores?name=zone&value=z1")
    assert [s["store"]["id"] for s in by_label["stores"]] == [other]
    limits = await _get(http, "/stores/limit")
    assert limits[str(other)] == {"add-peer": 15.0, "remove-peer": 15.0}
    weight = f"/store/{other}/weight"
    assert await _post(http, weight, {"leader": 1, "region": 1}) == "The store's weight is updated."
    assert "not supported" in await _post(http, weight, {"leader": 2, "region": 1}, 400)
    assert await _post(http, weight, {"leader": 1}, 400) == "region weight unset"
    state = await _get(http, "/stores/check?state=Up")
    assert state["count"] == 2
    assert (await _get(http, "/stores/check?state=Offline"))["count"] == 0
    assert "unknown StoreState" in await _get(http, "/stores/check?state=Sleepy", 400)
    # Labels: set (merged), then one deleted.
    label = f"/store/{other}/label"
    assert await _post(http, label, {"rack": "r1"}) == "The store's label is updated."
    async with http.delete("/pd/api/v1" + label, json="zone") as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == f"The label zone is deleted for store {other}."
    labels = (await _get(http, f"/store/{other}"))["store"]["labels"]
    assert labels == [{"key": "host", "value": "h1"}, {"key": "rack", "value": "r1"}]
    async with http.delete("/pd/api/v1" + label, json="zone") as resp:
        assert resp.status == 404


async def test_gc_and_min_resolved_ts(client: PdTestClient, http: aiohttp.ClientSession) -> None:
    await client.bootstrap()
    gc = await _get(http, "/gc/safepoint")
    assert gc == {"service_gc_safe_points": [], "gc_safe_point": 0}
    ts = await _get(http, "/min-resolved-ts?scope=cluster")
    assert ts["min_resolved_ts"] == 0 and ts["persist_interval"] == "1s"
    assert list(ts["stores_min_resolved_ts"].values()) == [0]
