"""The PD node against the in-memory and SQLite stores: bootstrap, stores, heartbeats,
durability across restarts, and bad input that must change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.storage.local import LocalStore
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.config import ReplicationConfig
from pdcore.domain.errors import (
    AlreadyBootstrapped,
    NotBootstrapped,
    PdError,
    StaleRegion,
    StoreTombstone,
)
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store, StoreState, StoreStats
from pdcore.service.node import Member, PdNode
from pdcore.service.region_ingest import REJECT_LOG_PER_S, UnknownStoreStream
from tests.support.clocks import SteppedClock

MEMBER = Member("pd", 1, ("http://127.0.0.1:2379",))


def make_node(store: object, **kw: object) -> PdNode:
    return PdNode(
        meta=store,
        region_storage=store,
        clock=SystemClock(),
        member=MEMBER,  # type: ignore[arg-type]
        region_flush_interval_s=0.05,
        **kw,
    )  # type: ignore[arg-type]


def first_region(store_id: int = 1) -> Region:
    return Region(2, b"", b"", RegionEpoch(1, 1), (Peer(3, store_id),), leader=Peer(3, store_id))


async def bootstrapped(store: object) -> PdNode:
    node = make_node(store)
    await node.start()
    await node.bootstrap(Store(1, "127.0.0.1:20160", version="8.5.0"), first_region())
    return node


async def test_not_bootstrapped_errors() -> None:
    node = make_node(MemoryStore())
    await node.start()
    with pytest.raises(NotBootstrapped):
        node.get_region(b"")
    with pytest.raises(NotBootstrapped):
        await node.put_store(Store(1, "a:1"))
    with pytest.raises(NotBootstrapped):
        await node.store_heartbeat(1, StoreStats())
    await node.stop()


async def test_double_bootstrap_is_refused_and_changes_nothing() -> None:
    mem = MemoryStore()
    node = await bootstrapped(mem)
    writes = mem.writes
    with pytest.raises(AlreadyBootstrapped):
        await node.bootstrap(Store(9, "x:1"), first_region(9))
    assert mem.writes == writes and node.get_store(9) is None
    await node.stop()


@pytest.mark.parametrize(
    ("store", "region", "message"),
    [
        (Store(0, "a:1"), first_region(), "zero store id"),
        (Store(1, ""), first_region(), "no address"),
        (Store(1, "a:1"), None, "missing region"),
        (
            Store(1, "a:1"),
            Region(2, b"a", b"", RegionEpoch(1, 1), (Peer(3, 1),)),
            "whole key space",
        ),
        (Store(1, "a:1"), Region(2, b"", b"", RegionEpoch(1, 1), ()), "no peers"),
        (Store(1, "a:1"), first_region(store_id=7), "bootstrap store"),
    ],
)
async def test_bad_bootstrap(store: Store, region: Region | None, message: str) -> None:
    node = make_node(MemoryStore())
    await node.start()
    with pytest.raises(PdError, match=message):
        await node.bootstrap(store, region)
    assert not node.is_bootstrapped
    await node.stop()


async def test_put_store_rules() -> None:
    node = await bootstrapped(MemoryStore())
    await node.put_store(Store(2, "127.0.0.1:20161", labels=(("zone", "a"),), version="8.5.0"))
    with pytest.raises(PdError, match="duplicated store address"):
        await node.put_store(Store(3, "127.0.0.1:20161"))
    with pytest.raises(PdError, match="not semver"):
        await node.put_store(Store(3, "127.0.0.1:20162", version="banana"))
    merged = await node.put_store(Store(2, "127.0.0.1:20161", labels=(("host", "h2"),)))
    assert dict(merged.labels) == {"zone": "a", "host": "h2"}
    await node.put_store(Store(3, "127.0.0.1:20163"))
    await node.put_store(Store(4, "127.0.0.1:20164"))
    await node.set_store_state(4, StoreState.OFFLINE)
    buried = await node.bury_empty_offline_stores()
    assert buried == [4]
    with pytest.raises(StoreTombstone):
        await node.put_store(Store(4, "127.0.0.1:20164"))
    with pytest.raises(StoreTombstone):
        await node.store_heartbeat(4, StoreStats())
    with pytest.raises(PdError, match="not found"):
        await node.store_heartbeat(99, StoreStats())
    await node.stop()


async def test_region_heartbeat_rejections_change_nothing() -> None:
    node = await bootstrapped(MemoryStore())
    good = Region(2, b"", b"", RegionEpoch(1, 2), (Peer(3, 1),), leader=Peer(3, 1))
    node.region_heartbeat(good)
    bad = [
        (good.with_(leader=None), PdError, "no leader"),
        (good.with_(epoch=RegionEpoch(1, 1)), StaleRegion, "stale"),
        (good.with_(peers=(), epoch=RegionEpoch(2, 2)), PdError, "no peers"),
        (good.with_(start_key=b"z", end_key=b"a", epoch=RegionEpoch(1, 3)), PdError, "not below"),
        (
            Region(5, b"", b"m", RegionEpoch(1, 9), (Peer(6, 42),), leader=Peer(6, 42)),
            UnknownStoreStream,
            "store 42 not found",
        ),
    ]
    for region, err, message in bad:
        with pytest.raises(err, match=message):
            node.region_heartbeat(region)
        assert node.tree.get(2) == good and len(node.tree) == 1
    await node.stop()


async def test_ask_batch_split_allocates_region_and_peer_ids() -> None:
    node = await bootstrapped(MemoryStore())
    ids = await node.ask_batch_split(first_region(), 2)
    assert len(ids) == 2 and all(len(peers) == 1 for _, peers in ids)
    flat = [i for rid, peers in ids for i in [rid, *peers]]
    assert len(set(flat)) == len(flat)
    with pytest.raises(PdError, match="epoch"):
        node.region_heartbeat(first_region().with_(epoch=RegionEpoch(1, 5)))
        await node.ask_batch_split(first_region(), 1)
    await node.stop()


async def test_local_store_keeps_everything_across_restart(tmp_path: Path) -> None:
    local = LocalStore(tmp_path)
    node = await bootstrapped(local)
    cluster_id = node.cluster_id
    await node.put_store(Store(2, "127.0.0.1:20161"))
    last_id = await node.alloc_id(5)
    ts = await node.tso(1)
    await node.update_gc_safe_point(77)
    await node.update_service_safe_point(b"cdc", 3600, 88)
    node.region_heartbeat(Region(2, b"", b"", RegionEpoch(1, 2), (Peer(3, 1),), leader=Peer(3, 1)))
    await node.stop()
    await local.close()

    local2 = LocalStore(tmp_path)
    again = make_node(local2)
    await again.start()
    assert again.cluster_id == cluster_id and again.is_bootstrapped
    assert {s.id for s in again.stores()} == {1, 2}
    assert again.tree.get(2).epoch == RegionEpoch(1, 2)  # type: ignore[union-attr]
    assert await again.alloc_id(1) > last_id
    assert (await again.tso(1)).compose() > ts.compose()
    assert again.gc.safe_point == 77 and b"cdc" in again.gc.services
    await again.stop()
    await local2.close()


async def test_storage_outage_loses_no_region_update() -> None:
    mem = MemoryStore()
    node = await bootstrapped(mem)
    mem.fail_writes = True
    node.region_heartbeat(Region(2, b"", b"", RegionEpoch(1, 3), (Peer(3, 1),), leader=Peer(3, 1)))
    with pytest.raises(OSError):
        await node.flush_regions()
    mem.fail_writes = False
    await node.flush_regions()
    assert mem.regions[2].epoch == RegionEpoch(1, 3)
    await node.stop()


@pytest.mark.parametrize("flush", [True, False])
async def test_a_crash_stop_leaves_unflushed_region_changes_unsaved(flush: bool) -> None:
    # The simulator's swarm restarts PD both ways; a crash must lose what kill -9 loses.
    mem = MemoryStore()
    node = PdNode(
        meta=mem,
        region_storage=mem,
        clock=SystemClock(),
        member=MEMBER,
        region_flush_interval_s=3600.0,
    )
    await node.start()
    await node.bootstrap(Store(1, "127.0.0.1:20160", version="8.5.0"), first_region())
    await node.flush_regions()
    node.region_heartbeat(Region(2, b"", b"", RegionEpoch(1, 3), (Peer(3, 1),), leader=Peer(3, 1)))
    await node.stop(flush=flush)
    assert mem.regions[2].epoch == (RegionEpoch(1, 3) if flush else RegionEpoch(1, 1))


async def test_rejected_heartbeats_are_counted_and_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = SteppedClock()
    node = make_node(MemoryStore())
    node.clock = clock
    await node.start()
    await node.bootstrap(Store(1, "127.0.0.1:20160", version="8.5.0"), first_region())
    stale = first_region().with_(epoch=RegionEpoch(0, 0))
    with caplog.at_level("WARNING", logger="kubepd.node"):
        for _ in range(REJECT_LOG_PER_S + 5):
            with pytest.raises(StaleRegion):
                node.region_heartbeat(stale)
        lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(lines) == REJECT_LOG_PER_S and "stale" in lines[0]
        clock.t += 1.0
        with pytest.raises(StaleRegion):
            node.region_heartbeat(stale)
    last = [r for r in caplog.records if "rejected" in r.getMessage()][-1]
    assert last.suppressed == 5  # type: ignore[attr-defined]
    assert last.region == stale.id  # type: ignore[attr-defined]
    assert node.stats.region_heartbeats_rejected == REJECT_LOG_PER_S + 6


async def test_bootstrap_sends_the_first_region_to_followers() -> None:
    """A follower synced before bootstrap must get the bootstrap region, or a new
    leader elected from it serves regions=0 until TiKV re-reports."""
    node = make_node(MemoryStore())
    await node.start()
    follower: asyncio.Queue[Region] = asyncio.Queue()
    node.region_watchers.add(follower)
    await node.bootstrap(Store(1, "127.0.0.1:20160", version="8.5.0"), first_region())
    assert follower.get_nowait() == first_region()
    await node.stop()


async def test_huge_id_and_split_counts_are_refused_and_burn_nothing() -> None:
    from pdcore.domain.errors import InvalidValue
    from pdcore.domain.ids import MAX_ALLOC_COUNT, MAX_SPLIT_COUNT

    node = await bootstrapped(MemoryStore())
    before = await node.alloc_id(1)
    with pytest.raises(InvalidValue, match="exceeds the limit"):
        await node.alloc_id((1 << 32) - 1)
    with pytest.raises(InvalidValue, match="exceeds the limit"):
        await node.ask_batch_split(first_region(), 1_000_000)
    assert await node.alloc_id(1) == before + 1  # no id was reserved by the refusals
    assert await node.alloc_id(MAX_ALLOC_COUNT) == before + 1 + MAX_ALLOC_COUNT
    ids = await node.ask_batch_split(first_region(), MAX_SPLIT_COUNT)
    assert len(ids) == MAX_SPLIT_COUNT
    await node.stop()


async def test_an_epoch_jump_no_real_region_makes_is_refused() -> None:
    from pdcore.domain.region import MAX_EPOCH_STEP

    node = await bootstrapped(MemoryStore())
    with pytest.raises(PdError, match="jumps more than"):
        node.region_heartbeat(first_region().with_(epoch=RegionEpoch(1, 2 + MAX_EPOCH_STEP)))
    node.region_heartbeat(first_region().with_(epoch=RegionEpoch(1, 1 + MAX_EPOCH_STEP)))
    assert node.tree.get(2).epoch.version == 1 + MAX_EPOCH_STEP  # type: ignore[union-attr]
    await node.stop()


async def test_the_facades_config_and_clock_are_what_every_service_reads() -> None:
    """PdNode's services share one MemberState: a config set on the node (a watched
    TiKVCluster) and a clock set on it reach the store registry and region ingest."""
    node = await bootstrapped(MemoryStore())
    await node.put_store(Store(2, "127.0.0.1:20161", version="8.5.0"))
    with pytest.raises(PdError, match="fewer than max-replicas 3"):
        await node.set_store_state(2, StoreState.OFFLINE)
    node.config = dataclasses.replace(node.config, replication=ReplicationConfig(max_replicas=1))
    assert node.store_registry.member.config.replication.max_replicas == 1
    assert (await node.set_store_state(2, StoreState.OFFLINE)).is_offline
    clock = SteppedClock(5000.0)
    node.clock = clock
    store = await node.store_heartbeat(1, StoreStats())
    assert store.last_heartbeat_ns == int(5000.0 * 1e9), "the registry reads the new clock"
    await node.stop()
