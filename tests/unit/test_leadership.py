"""PdNode.become_leader / step_down: a member that steps down stops handing out
timestamps at once; one that takes over keeps its synced regions, re-reads the durable
state, and hands out only timestamps and ids above everything its predecessor could
have handed out."""

from __future__ import annotations

import pytest

from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.errors import NotLeader
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store
from pdcore.service.node import PdNode
from tests.unit.test_node import first_region, make_node


async def pair() -> tuple[MemoryStore, PdNode, list[bool], PdNode, list[bool]]:
    store = MemoryStore()
    a_leads, b_leads = [True], [False]
    a = make_node(store, is_leader=lambda: a_leads[0], tso_save_interval_ms=3000)
    b = make_node(store, is_leader=lambda: b_leads[0], tso_save_interval_ms=3000)
    await a.start()
    await a.bootstrap(Store(1, "127.0.0.1:20160", version="8.5.0"), first_region())
    await b.start(serve_writes=False)
    return store, a, a_leads, b, b_leads


async def test_a_take_over_serves_above_everything_the_old_leader_could_serve() -> None:
    store, a, a_leads, b, b_leads = await pair()
    try:
        ts_a = (await a.tso(10)).compose()
        id_a = await a.alloc_id(3)
        window_a = store.state.tso_window
        # b follows: its synced region tree is all it has of the regions.
        synced = Region(40, b"m", b"", RegionEpoch(1, 3), (Peer(41, 1),), leader=Peer(41, 1))
        b.tree.put(synced)
        with pytest.raises(NotLeader):
            await b.tso(1)

        a.step_down()
        with pytest.raises(NotLeader):  # at once, before its lease says anything
            await a.tso(1)
        a_leads[0] = False
        await b.become_leader()
        b_leads[0] = True

        assert b.tree.get(40) == synced  # the region cache stays
        assert b.get_store(1) is not None  # durable state re-read
        ts_b = (await b.tso(1)).compose()
        # above what a handed out, and above the whole window a had saved
        assert ts_b > ts_a and ts_b >> 18 >= window_a
        id_b = await b.alloc_id(1)
        assert id_b > a.ids.end >= id_a  # past a's whole reservation, not just its last id
        with pytest.raises(NotLeader):
            await a.alloc_id(1)  # the old leader's role check refuses
    finally:
        await a.stop()
        await b.stop()


async def test_a_leader_that_stepped_down_and_won_again_moves_past_its_successor() -> None:
    _, a, a_leads, b, b_leads = await pair()
    try:
        a.step_down()
        a_leads[0] = False
        await b.become_leader()
        b_leads[0] = True
        ts_b = (await b.tso(5)).compose()
        id_b = await b.alloc_id(1)

        b.step_down()
        b_leads[0] = False
        with pytest.raises(NotLeader):
            await b.tso(1)
        await a.become_leader()  # the first leader wins the lease back
        a_leads[0] = True
        assert (await a.tso(1)).compose() > ts_b
        assert await a.alloc_id(1) > b.ids.end >= id_b
    finally:
        await a.stop()
        await b.stop()


async def test_a_stale_leader_that_never_stepped_down_cannot_extend_its_window() -> None:
    """If the old leader missed its step-down, the CAS on the saved window fences it:
    once its window runs out it refuses timestamps rather than reuse the new one's."""
    _, a, _, b, b_leads = await pair()
    try:
        await b.become_leader()  # a still thinks it leads
        b_leads[0] = True
        ts_b = (await b.tso(1)).compose()
        a.tso_alloc.saved_until = 1  # its window has run out: the next call must extend it
        with pytest.raises(NotLeader, match="taken over"):
            await a.tso(1)
        assert (await b.tso(1)).compose() > ts_b  # the new leader is unaffected
    finally:
        await a.stop()
        await b.stop()
