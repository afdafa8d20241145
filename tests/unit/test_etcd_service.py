"""EtcdService over the memory and SQLite stores: PD's alloc_id key, durability
across restarts, bounded history, lease expiry on the given clock, watches, and bad
input or failed storage that must change nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pdcore.adapters.storage.local import LocalStore
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.errors import NotLeader
from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.domain.etcd_ops import DeleteOp, PutOp, TxnOp
from pdcore.domain.mvcc import EventType, RangeQuery
from pdcore.ports import EtcdChange
from pdcore.service.etcd import EtcdService
from pdcore.service.etcd_watch import ERR_DUPLICATE_ID, ERR_EMPTY_RANGE, WatchSpec, WatchUpdate
from pdcore.service.node import Member, PdNode
from tests.support.clocks import SteppedClock

Store = MemoryStore | LocalStore


async def make(
    store: Store,
    clock: SteppedClock | None = None,
    leader: Callable[[], bool] | None = None,
    **kw: int,
) -> EtcdService:
    clock = clock or SteppedClock()
    node = PdNode(
        meta=store,
        region_storage=store,
        clock=clock,
        member=Member("pd", 7, ("http://127.0.0.1:2379",)),
        is_leader=leader,
    )
    await node.start()
    svc = EtcdService(node, store, clock, **kw)  # type: ignore[arg-type]
    await svc.start()
    return svc


async def close(svc: EtcdService) -> None:
    await svc.stop()
    await svc.node.stop()


@pytest.fixture
async def svc() -> AsyncIterator[EtcdService]:
    s = await make(MemoryStore())
    try:
        yield s
    finally:
        await close(s)


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def value(svc: EtcdService, key: bytes) -> bytes | None:
    kvs = svc.range(RangeQuery(key)).kvs
    return kvs[0].value if kvs else None


async def test_alloc_id_put_raises_the_mark_and_reads_return_it(svc: EtcdService) -> None:
    key = svc.alloc_key
    assert key == f"/pd/{svc.node.cluster_id}/alloc_id".encode()
    await svc.node.alloc_id()  # reserves a batch: the mark moves
    assert value(svc, key) == svc.node.ids.end.to_bytes(8, "big")
    await svc.write(PutOp(key, (50_000).to_bytes(8, "big")))
    assert svc.node.ids.end == 50_000
    assert await svc.node.alloc_id() == 50_001
    mark = svc.node.ids.end
    await svc.write(PutOp(key, (10).to_bytes(8, "big")))  # lower: ignored
    assert svc.node.ids.end == mark and await svc.node.alloc_id() == 50_002
    assert value(svc, key) == mark.to_bytes(8, "big")


async def test_alloc_id_put_inside_a_txn_raises_the_mark(svc: EtcdService) -> None:
    key = svc.alloc_key
    await svc.write(TxnOp(success=[PutOp(key, (77_777).to_bytes(8, "big"))]))
    assert await svc.node.alloc_id() == 77_778


async def test_bad_alloc_id_value_changes_nothing(svc: EtcdService) -> None:
    store = svc.store
    assert isinstance(store, MemoryStore)
    rev, writes, mark = svc.mvcc.revision, store.writes, svc.node.ids.end
    for bad in (PutOp(svc.alloc_key, b"\x01" * 7), TxnOp(success=[PutOp(svc.alloc_key, b"")])):
        with pytest.raises(EtcdError) as e:
            await svc.write(bad)
        assert e.value.kind == EtcdErrorKind.INVALID_VALUE and "8-byte" in str(e.value)
    assert (svc.mvcc.revision, store.writes, svc.node.ids.end) == (rev, writes, mark)


async def test_bad_requests_change_nothing(svc: EtcdService) -> None:
    await svc.write(PutOp(b"a", b"1"))
    store = svc.store
    assert isinstance(store, MemoryStore)
    rev, writes = svc.mvcc.revision, store.writes
    cases = [
        (PutOp(b"", b"x"), EtcdErrorKind.EMPTY_KEY),
        (PutOp(b"b", b"x", lease=42), EtcdErrorKind.LEASE_NOT_FOUND),
        (
            TxnOp(success=[PutOp(b"c", b"1"), PutOp(b"d", ignore_lease=True)]),
            EtcdErrorKind.KEY_NOT_FOUND,
        ),
        (TxnOp(success=[PutOp(b"c", b"1"), PutOp(b"c", b"2")]), EtcdErrorKind.DUPLICATE_KEY),
    ]
    for op, kind in cases:
        with pytest.raises(EtcdError) as e:
            await svc.write(op)
        assert e.value.kind == kind
    with pytest.raises(EtcdError):
        await svc.lease_grant(10**12)
    with pytest.raises(EtcdError):
        await svc.lease_revoke(999)
    assert (svc.mvcc.revision, store.writes) == (rev, writes)
    assert value(svc, b"c") is None and not svc.leases.leases


async def test_storage_failure_rolls_back_and_publishes_nothing(svc: EtcdService) -> None:
    stream = svc.hub.open()
    stream.create(WatchSpec(b"k"))
    created = stream.out.get_nowait()
    assert created.created
    store = svc.store
    assert isinstance(store, MemoryStore)
    rev = svc.mvcc.revision
    store.fail_writes = True
    with pytest.raises(OSError):
        await svc.write(PutOp(b"k", b"v"))
    assert svc.mvcc.revision == rev and value(svc, b"k") is None and stream.out.empty()
    store.fail_writes = False
    await svc.write(PutOp(b"k", b"v"))
    update = stream.out.get_nowait()
    assert [ev.kv.value for ev in update.events] == [b"v"] and update.revision == rev + 1


async def test_not_the_leader_refuses_writes() -> None:
    leading = [True]
    svc = await make(MemoryStore(), leader=lambda: leading[0])
    try:
        leading[0] = False
        with pytest.raises(NotLeader):
            await svc.write(PutOp(b"k", b"v"))
        with pytest.raises(NotLeader):
            await svc.lease_grant(10)
    finally:
        leading[0] = True
        await close(svc)


async def test_keys_revisions_history_and_leases_survive_restart(tmp_path: Path) -> None:
    clock = SteppedClock()
    svc = await make(LocalStore(tmp_path), clock)
    _, r1 = await svc.write(PutOp(b"/k", b"1"))
    await svc.write(PutOp(b"/k", b"2"))
    lease = await svc.lease_grant(30)
    await svc.write(PutOp(b"/leased", b"x", lease=lease.id))
    await svc.write(DeleteOp(b"/gone"))  # nothing to delete: no new revision
    await svc.write(PutOp(b"/gone", b"1"))
    _, last = await svc.write(DeleteOp(b"/gone"))
    await svc.compact(r1)
    await close(svc)
    await svc.store.close()  # type: ignore[attr-defined]

    again = await make(LocalStore(tmp_path), clock)
    try:
        assert again.mvcc.revision == last and again.mvcc.compact_revision == r1
        assert value(again, b"/k") == b"2" and value(again, b"/gone") is None
        assert again.range(RangeQuery(b"/k", revision=r1)).kvs[0].value == b"1"
        assert again.leases.get(lease.id).keys == {b"/leased"}
        left, _ = again.lease_time_to_live(lease.id)
        assert left == 30  # a restored lease gets a full TTL from the restart
        with pytest.raises(EtcdError) as e:
            again.range(RangeQuery(b"/k", revision=r1 - 1))
        assert e.value.kind == EtcdErrorKind.COMPACTED
        _, rev = await again.write(PutOp(b"/k", b"3"))
        assert rev == last + 1
    finally:
        await close(again)
        await again.store.close()  # type: ignore[attr-defined]


async def test_history_is_bounded_by_automatic_compaction(tmp_path: Path) -> None:
    svc = await make(LocalStore(tmp_path), history=20, compact_batch=10)
    try:
        for i in range(100):
            await svc.write(PutOp(b"hot", str(i).encode()))
        rev = svc.mvcc.revision
        assert rev - 30 <= svc.mvcc.compact_revision <= rev - 20
        state = await svc.store.load_etcd()  # type: ignore[attr-defined]
        assert len(state.records) <= 31  # the kept window, plus the alloc_id key
        assert state.compact_revision == svc.mvcc.compact_revision
        with pytest.raises(EtcdError) as e:
            svc.range(RangeQuery(b"hot", revision=rev - 40))
        assert e.value.kind == EtcdErrorKind.COMPACTED
        assert svc.range(RangeQuery(b"hot", revision=rev - 15)).kvs
    finally:
        await close(svc)
        await svc.store.close()  # type: ignore[attr-defined]


async def test_leases_expire_on_the_given_clock_and_take_their_keys() -> None:
    clock = SteppedClock()
    svc = await make(MemoryStore(), clock)
    try:
        lease = await svc.lease_grant(10)
        kept = await svc.lease_grant(10)
        await svc.write(PutOp(b"/a", b"1", lease=lease.id))
        await svc.write(PutOp(b"/b", b"1", lease=lease.id))
        await svc.write(PutOp(b"/c", b"1", lease=kept.id))
        stream = svc.hub.open()
        stream.create(WatchSpec(b"/", b""))
        stream.out.get_nowait()
        clock.t += 9
        assert svc.lease_keepalive(kept.id) == 10
        await asyncio.sleep(0.3)  # the expiry loop ticks; nothing is due yet
        assert value(svc, b"/a") == b"1"
        clock.t += 2  # lease is 11 s old, kept was renewed 2 s ago
        await wait_for(lambda: lease.id not in svc.leases)
        assert value(svc, b"/a") is None and value(svc, b"/b") is None
        assert value(svc, b"/c") == b"1" and kept.id in svc.leases
        update = stream.out.get_nowait()  # both deletions at one revision
        assert [(ev.type, ev.kv.key) for ev in update.events] == [
            (EventType.DELETE, b"/a"),
            (EventType.DELETE, b"/b"),
        ]
        assert svc.lease_keepalive(lease.id) == 0
        assert svc.lease_time_to_live(lease.id) == (-1, None)
    finally:
        await close(svc)


def drain(q: asyncio.Queue[WatchUpdate]) -> list[WatchUpdate]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def test_watch_replay_live_filters_cancel_progress(svc: EtcdService) -> None:
    _, start = await svc.write(PutOp(b"/w/a", b"1"))
    await svc.write(PutOp(b"/x", b"1"))
    await svc.write(DeleteOp(b"/w/a"))
    s = svc.hub.open()
    s.create(WatchSpec(b"/w/", b"/w0", start_revision=start, prev_kv=True))
    s.create(WatchSpec(b"/w/", b"/w0", no_put=True))
    s.create(WatchSpec(b"/w/b", progress_notify=True))
    ups = drain(s.out)
    assert [(u.watch_id, u.created) for u in ups if u.created] == [(0, True), (1, True), (2, True)]
    replay = [u for u in ups if u.events]
    assert [(ev.type, ev.kv.key) for u in replay for ev in u.events] == [
        (EventType.PUT, b"/w/a"),
        (EventType.DELETE, b"/w/a"),
    ]
    assert replay[0].events[1].prev_kv is not None  # asked for prev_kv
    _, rev = await svc.write(PutOp(b"/w/b", b"2"))
    live = drain(s.out)
    assert [(u.watch_id, u.revision) for u in live] == [(0, rev), (2, rev)]  # 1 has NOPUT
    await svc.write(DeleteOp(b"/w/b"))
    assert sorted(u.watch_id for u in drain(s.out)) == [0, 1, 2]
    s.cancel(0)
    assert [(u.watch_id, u.canceled) for u in drain(s.out)] == [(0, True)]
    await svc.write(PutOp(b"/w/b", b"3"))
    assert sorted(u.watch_id for u in drain(s.out)) == [2]
    svc.hub.notify_progress()
    s.progress()
    ups = drain(s.out)
    assert [(u.watch_id, u.revision, list(u.events)) for u in ups] == [
        (2, svc.mvcc.revision, []),
        (-1, svc.mvcc.revision, []),
    ]
    s.close()
    assert svc.hub.watchers == 0


async def test_watch_bad_requests_and_compacted_start(svc: EtcdService) -> None:
    _, first = await svc.write(PutOp(b"k", b"1"))
    await svc.write(PutOp(b"k", b"2"))
    await svc.compact(svc.mvcc.revision)
    s = svc.hub.open()
    s.create(WatchSpec(b"k", start_revision=first))
    created, compacted = drain(s.out)
    assert created.created and compacted.canceled
    assert compacted.compact_revision == svc.mvcc.compact_revision
    s.create(WatchSpec(b"b", b"a"))
    (bad,) = drain(s.out)
    assert (bad.watch_id, bad.created, bad.canceled, bad.cancel_reason) == (
        -1,
        True,
        True,
        ERR_EMPTY_RANGE,
    )
    s.create(WatchSpec(b"k", watch_id=5))
    s.create(WatchSpec(b"k", watch_id=5))
    ok, dup = drain(s.out)
    assert ok.watch_id == 5 and not ok.canceled
    assert dup.canceled and dup.cancel_reason == ERR_DUPLICATE_ID
    assert list(s.watchers) == [5]


class GatedStore(MemoryStore):
    """Holds every etcd save until the test opens the gate, counting the saves."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.saves = 0

    async def save_etcd(self, change: EtcdChange) -> None:
        await self.gate.wait()
        self.saves += 1
        await super().save_etcd(change)


async def test_concurrent_writes_are_group_committed_and_invisible_until_durable() -> None:
    store = GatedStore()
    store.gate.set()
    svc = await make(store)
    try:
        store.gate.clear()
        base, saves = svc.mvcc.revision, store.saves
        first = asyncio.create_task(svc.write(PutOp(b"k0", b"v")))
        await wait_for(lambda: svc.mvcc.head > base)  # applied, waiting on the store
        rest = [asyncio.create_task(svc.write(PutOp(b"k%d" % i, b"v"))) for i in range(1, 6)]
        bad = asyncio.create_task(svc.write(PutOp(b"kx", b"v", lease=99)))  # no such lease
        await asyncio.sleep(0.05)
        assert value(svc, b"k0") is None and svc.mvcc.revision == base  # not durable yet
        store.gate.set()
        revs = [(await t)[1] for t in [first, *rest]]
        with pytest.raises(EtcdError) as e:
            await bad
        assert e.value.kind == EtcdErrorKind.LEASE_NOT_FOUND
        assert revs == list(range(base + 1, base + 7))  # one revision each, in order
        assert store.saves - saves == 2  # the first alone, the other five (and the bad) together
        assert all(value(svc, b"k%d" % i) == b"v" for i in range(6))
        assert value(svc, b"kx") is None and svc.mvcc.head == svc.mvcc.revision
    finally:
        store.gate.set()
        await close(svc)


async def test_a_failed_group_commit_rolls_back_every_write_in_it() -> None:
    store = GatedStore()
    store.gate.set()
    svc = await make(store)
    try:
        base = svc.mvcc.revision
        store.fail_writes = True
        tasks = [asyncio.create_task(svc.write(PutOp(b"k%d" % i, b"v"))) for i in range(4)]
        for t in tasks:
            with pytest.raises(OSError):
                await t
        assert (svc.mvcc.revision, svc.mvcc.head) == (base, base)
        assert all(value(svc, b"k%d" % i) is None for i in range(4))
        store.fail_writes = False
        _, rev = await svc.write(PutOp(b"k0", b"v"))
        assert rev == base + 1
    finally:
        await close(svc)
