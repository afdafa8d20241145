"""A follower's periodic refresh of durable state, racing a take-over of the pd-leader
role: a refresh that read the store before the take-over must not land after it and
put back the old TSO window (the new leader would then refuse every timestamp)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.errors import NotLeader
from pdcore.domain.region import RegionEpoch
from pdcore.domain.store import Store
from pdcore.ports import PersistedState
from tests.unit.test_node import first_region, make_node


class GatedStore(MemoryStore):
    """The next load() after `arm()` reads the state, then waits for `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def load(self) -> PersistedState:
        state = await super().load()
        if self.armed:
            self.armed = False
            self.reading.set()
            await self.release.wait()
        return state


async def test_a_refresh_that_started_before_a_take_over_does_not_undo_it() -> None:
    store = GatedStore()
    leader = [False]
    node = make_node(store, is_leader=lambda: leader[0], tso_save_interval_ms=150)
    await node.start(serve_writes=False)
    store.armed = True
    refresh = asyncio.create_task(node.load_durable(serve_writes=False))
    await asyncio.wait_for(store.reading.wait(), 5)

    async def take_over() -> None:  # as the sidecar does: serving as soon as it is done
        await node.become_leader()
        leader[0] = True

    task = asyncio.create_task(take_over())
    await asyncio.sleep(0.05)  # let the take-over run as far as it can
    store.release.set()
    await asyncio.wait_for(asyncio.gather(refresh, task), 5)
    assert leader[0]
    # Serve across several window extensions: each is a CAS on the saved window.
    last = 0
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        try:
            ts = (await node.tso(1)).compose()
        except NotLeader as e:  # before the fix: "tso window was taken over"
            raise AssertionError(f"the new leader refused timestamps: {e}") from None
        assert ts > last
        last = ts
        await asyncio.sleep(0.01)
    assert store.state.tso_window > 0
    await node.stop()


async def test_a_refresh_after_stepping_down_reads_the_store_again() -> None:
    store = MemoryStore()
    node = make_node(store, tso_save_interval_ms=150)
    await node.start()
    node.step_down()
    store.state.id_mark = 5000  # another member moved on
    await node.load_durable(serve_writes=False)
    assert node.ids.end == 5000
    await node.stop()


async def test_a_lost_window_stops_the_keeper_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another member moved the saved window: this one stops serving for good instead
    of logging a traceback every 50 ms while it retries."""
    store = MemoryStore()
    node = make_node(store, tso_save_interval_ms=150)
    await node.start()
    store.state.tso_window += 10_000_000  # someone else took TSO over
    with caplog.at_level(logging.WARNING, "kubepd.node"):
        deadline = time.monotonic() + 5
        while node.tso_alloc.saved_until != 0:
            assert time.monotonic() < deadline, "the keeper never noticed"
            await asyncio.sleep(0.02)
        with pytest.raises(NotLeader):
            await node.tso(1)
        for _ in range(10):  # the keeper's period is 50 ms: it would have retried by now
            await asyncio.sleep(0.05)
    assert len([r for r in caplog.records if "tso" in r.getMessage()]) == 2  # error + failed
    await node.stop()


async def test_a_storage_outage_is_logged_when_it_starts_and_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    node = make_node(store)
    await node.start()
    await node.bootstrap(Store(1, "127.0.0.1:20160"), first_region())
    store.fail_writes = True
    with caplog.at_level(logging.INFO, "kubepd.node"):
        node.region_heartbeat(first_region().with_(epoch=RegionEpoch(1, 2)))
        deadline = time.monotonic() + 5
        while node.regions.flush_failures.count < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        store.fail_writes = False
        while store.regions.get(2) is None or store.regions[2].epoch.version != 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    messages = [r.getMessage() for r in caplog.records if "saving regions" in r.getMessage()]
    assert len(messages) == 2 and "works again" in messages[1]
    await node.stop()
