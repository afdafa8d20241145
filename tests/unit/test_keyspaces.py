"""KeyspaceManager on the in-memory store: DEFAULT, ids never reused (also by a leader
whose mark is stale), PD's state machine, config patches, and bad input changing nothing."""

from __future__ import annotations

import pytest

from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.errors import InvalidValue, NotLeader
from pdcore.domain.keyspace import KeyspaceExists, KeyspaceNotFound, KeyspaceState
from pdcore.service.keyspaces import KeyspaceManager


class Clock:
    def now_s(self) -> float:
        return 1_700_000_000.0

    def monotonic_s(self) -> float:
        return 0.0


def manager(store: MemoryStore, leader: bool = True) -> KeyspaceManager:
    return KeyspaceManager(store, Clock(), lambda: leader)


async def test_default_exists_and_ids_are_never_reused_even_by_a_stale_leader() -> None:
    store = MemoryStore()
    a = manager(store)
    await a.start_leading()
    assert (a.by_name("DEFAULT").id, a.by_id(0).state) == (0, KeyspaceState.ENABLED)
    assert (await a.create("one", {})).id == 1
    stale = manager(store)  # took over but has not reloaded: its mark is 0
    assert (await stale.create("two", {})).id == 2
    assert (await a.create("three", {})).id == 3
    assert store.keyspace_mark == 3
    assert sorted(store.keyspaces) == [0, 1, 2, 3]


async def test_state_machine_and_config() -> None:
    ks = manager(MemoryStore())
    await ks.start_leading()
    k = await ks.create("t", {"a": "1"})
    with pytest.raises(InvalidValue, match="cannot go from ENABLED to ARCHIVED"):
        await ks.update_state(k.id, KeyspaceState.ARCHIVED)
    for state in (KeyspaceState.DISABLED, KeyspaceState.ARCHIVED, KeyspaceState.TOMBSTONE):
        k = await ks.update_state(k.id, state)
    assert k.state == KeyspaceState.TOMBSTONE
    with pytest.raises(InvalidValue, match="cannot go from TOMBSTONE to ENABLED"):
        await ks.update_state(k.id, KeyspaceState.ENABLED)
    with pytest.raises(InvalidValue, match="config is frozen"):
        await ks.update_config("t", {"a": None})
    with pytest.raises(InvalidValue, match="DEFAULT"):
        await ks.update_state(0, KeyspaceState.DISABLED)
    b = await ks.create("b", {"x": "1", "y": "2"})
    assert (await ks.update_config("b", {"x": None, "z": "3"})).config == {"y": "2", "z": "3"}
    assert b.config == {"x": "1", "y": "2"}  # keyspaces are values


async def test_bad_input_changes_nothing() -> None:
    store = MemoryStore()
    ks = manager(store)
    await ks.start_leading()
    writes = store.writes
    for name in ("", "a b", "x" * 65, "é"):
        with pytest.raises(InvalidValue):
            await ks.create(name, {})
    with pytest.raises(KeyspaceExists):
        await ks.create("DEFAULT", {})
    with pytest.raises(KeyspaceNotFound):
        await ks.update_state(9, KeyspaceState.DISABLED)
    with pytest.raises(NotLeader):
        await manager(store, leader=False).create("f", {})
    assert store.writes == writes and store.keyspace_mark == 0
