"""EtcdService: the etcd v3 API's KV, leases and watches over `Mvcc`, made durable.

Writes are serialized and group-committed: each request runs in its own `WriteTxn`
(its own revision), a group of them is persisted through the `EtcdStore` port in one
write, and only then becomes visible and reaches watchers; a storage failure rolls
the whole group back, a bad request fails alone. History is bounded: once more than
`history` revisions are kept, the oldest are compacted away (reads and watches before
that get ErrCompacted).

PD's own key `/pd/<cluster id>/alloc_id` is PD's ID allocator: a put raises the
allocator's mark (never lowers it) and a read returns the mark in force.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.domain.etcd_ops import (
    DeleteOp,
    Op,
    OpResult,
    PutOp,
    TxnResult,
    execute,
    validate,
    writes,
)
from pdcore.domain.leases import Lease, LeaseTable
from pdcore.domain.mvcc import Event, Mvcc, RangeQuery, RangeResult, WriteTxn
from pdcore.ports import Clock, EtcdChange, EtcdStore
from pdcore.service.etcd_watch import WatchHub
from pdcore.service.node import PdNode

log = logging.getLogger("kubepd.etcd")

DEFAULT_HISTORY = 10_000  # revisions kept for reads and watches of the past
COMPACT_BATCH = 1_000  # compact in steps, not on every write
EXPIRY_TICK_S = 0.25
PROGRESS_INTERVAL_S = 600.0  # etcd's default progress-notify interval
BATCH_OPS = 128  # write requests committed together at the most
BATCH_BYTES = 256 * 1024  # ... and their keys and values (one Kubernetes write holds 768 KiB)


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int = 1


class EtcdService:
    def __init__(
        self,
        node: PdNode,
        store: EtcdStore,
        clock: Clock,
        *,
        history: int = DEFAULT_HISTORY,
        compact_batch: int = COMPACT_BATCH,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.clock = clock
        self.history = history
        self.compact_batch = compact_batch
        self.progress_interval_s = progress_interval_s
        self.mvcc = Mvcc()
        self.leases = LeaseTable()
        self.hub = WatchHub(self.mvcc)
        self._lock = asyncio.Lock()
        self._rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: deque[tuple[Op, asyncio.Future[tuple[OpResult, int]]]] = deque()
        self._committer: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def alloc_key(self) -> bytes:
        return f"/pd/{self.node.cluster_id}/alloc_id".encode()

    async def start(self) -> None:
        state = await self.store.load_etcd()
        self.mvcc.restore(state.revision, state.compact_revision, state.records)
        now = self.clock.monotonic_s()
        for lease_id, ttl in state.leases.items():
            self.leases.leases[lease_id] = Lease(lease_id, ttl, now + ttl)
        for kv in self.mvcc.live(b"\x00", b"", self.mvcc.revision):
            if kv.lease:
                self.leases.attach(kv.lease, kv.key)
        if self.mvcc.get(self.alloc_key) is None:
            mark = self.node.ids.end.to_bytes(8, "big")
            await self.write(PutOp(self.alloc_key, mark))
        self._tasks = [
            asyncio.create_task(self._expire_leases(), name="etcd-lease-expiry"),
            asyncio.create_task(self._progress(), name="etcd-watch-progress"),
        ]
        log.info("etcd api ready", extra={"revision": self.mvcc.revision})

    async def stop(self) -> None:
        self.hub.shutdown()
        if self._committer is not None:
            self._tasks.append(self._committer)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def header(self, revision: int | None = None) -> Header:
        return Header(
            self.node.cluster_id,
            self.node.member.member_id,
            self.mvcc.revision if revision is None else revision,
        )

    # -- KV ----------------------------------------------------------------------
    def range(self, q: RangeQuery) -> RangeResult:
        validate(q)
        return self._with_id_mark(self.mvcc.range(q))

    def _with_id_mark(self, result: RangeResult) -> RangeResult:
        key = self.alloc_key
        if any(kv.key == key for kv in result.kvs):
            mark = self.node.ids.end.to_bytes(8, "big")
            result.kvs = [
                replace(kv, value=mark) if kv.key == key and kv.value else kv for kv in result.kvs
            ]
        return result

    def _check_pd_keys(self, op: Op) -> None:
        for put in writes(op):
            if put.key == self.alloc_key and not put.ignore_value and len(put.value) != 8:
                raise EtcdError(
                    EtcdErrorKind.INVALID_VALUE, "alloc_id is an 8-byte big-endian integer"
                )

    async def write(self, op: Op) -> tuple[OpResult, int]:
        """Run a Put, DeleteRange or Txn; returns its result and the revision after it.

        Concurrent writes are committed in groups: each gets its own revision, all of a
        group are persisted in one store write, then published together."""
        validate(op)
        self._check_pd_keys(op)
        fut: asyncio.Future[tuple[OpResult, int]] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queue(), name="etcd-commit")
        result, revision = await fut
        if isinstance(result, RangeResult):
            result = self._with_id_mark(result)
        elif isinstance(result, TxnResult):
            self._mark_txn_ranges(result)
        return result, revision

    async def _commit_queue(self) -> None:
        while self._queue:
            batch: list[tuple[Op, asyncio.Future[Any]]] = []
            size = 0
            while self._queue and len(batch) < BATCH_OPS and size < BATCH_BYTES:
                op, fut = self._queue.popleft()
                batch.append((op, fut))
                size += sum(len(p.key) + len(p.value) for p in writes(op))
            try:
                await self._commit_batch(batch)
            except BaseException as e:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise

    async def _commit_batch(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        async with self._lock:
            self.node.check_serving()
            applied: list[tuple[WriteTxn, asyncio.Future[Any], OpResult]] = []
            try:
                for op, fut in batch:
                    txn = self.mvcc.begin()
                    try:
                        result = execute(txn, op, self.leases.__contains__)
                        await self._raise_id_mark(txn)
                    except EtcdError as e:  # this request's own fault: only it fails
                        txn.rollback()
                        fut.set_exception(e)
                        continue
                    txn.apply()
                    applied.append((txn, fut, result))
                records = [r for txn, _, _ in applied for r in txn.records]
                if records:
                    change = EtcdChange(revision=self.mvcc.head, added=records)
                    await self.store.save_etcd(change)
            except BaseException:
                for txn, _, _ in reversed(applied):
                    txn.rollback()
                raise
            self.mvcc.publish()
            for txn, fut, result in applied:
                self._track_leases(txn.events)
                self.hub.publish(txn.revision, txn.events)
                if not fut.done():
                    fut.set_result((result, txn.revision if txn.records else txn.base))
            await self._maybe_compact()

    def _mark_txn_ranges(self, result: TxnResult) -> None:
        for i, sub in enumerate(result.responses):
            if isinstance(sub, RangeResult):
                result.responses[i] = self._with_id_mark(sub)
            elif isinstance(sub, TxnResult):
                self._mark_txn_ranges(sub)

    async def _raise_id_mark(self, txn: WriteTxn) -> None:
        key = self.alloc_key
        for rec in txn.records:
            if rec.kv.key == key and not rec.tombstone:
                await self.node.raise_id_mark(int.from_bytes(rec.kv.value, "big"))

    def _commit(self, txn: WriteTxn) -> int:
        revision = txn.commit()
        self._track_leases(txn.events)
        self.hub.publish(revision, txn.events)
        return revision

    def _track_leases(self, events: list[Event]) -> None:
        for ev in events:
            if ev.prev_kv is not None and ev.prev_kv.lease:
                self.leases.detach(ev.prev_kv.lease, ev.kv.key)
            if ev.kv.lease:
                self.leases.attach(ev.kv.lease, ev.kv.key)

    async def compact(self, revision: int) -> int:
        async with self._lock:
            self.node.check_serving()
            await self._compact_to(revision)
            return self.mvcc.revision

    async def _maybe_compact(self) -> None:
        floor = self.mvcc.revision - self.history
        if floor - self.mvcc.compact_revision >= self.compact_batch:
            try:
                await self._compact_to(floor)
            except Exception:  # the write itself is committed; compaction retries later
                log.exception("could not compact the etcd history")

    async def _compact_to(self, revision: int) -> None:
        old = self.mvcc.compact_revision
        # Validate first: Mvcc.compact raises before it changes anything.
        dropped = self.mvcc.compact(revision)
        change = EtcdChange(
            revision=self.mvcc.revision,
            dropped=[(r.revision, r.sub) for r in dropped],
            compact_revision=revision,
        )
        try:
            await self.store.save_etcd(change)
        except BaseException:
            # The records are gone from memory but not from disk: a restart brings them
            # back, which is harmless; keep the old compact mark so reads stay honest.
            self.mvcc.compact_revision = old
            raise

    # -- leases -------------------------------------------------------------------
    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        if lease_id < 0:
            raise EtcdError(EtcdErrorKind.LEASE_NOT_FOUND)
        ttl = self.leases.check_grant(ttl)
        async with self._lock:
            self.node.check_serving()
            if lease_id == 0:
                lease_id = self._new_lease_id()
            elif lease_id in self.leases:
                raise EtcdError(EtcdErrorKind.LEASE_EXIST)
            change = EtcdChange(revision=self.mvcc.revision, leases_granted={lease_id: ttl})
            await self.store.save_etcd(change)
            return self.leases.grant(lease_id, ttl, self.clock.monotonic_s())

    def _new_lease_id(self) -> int:
        while True:
            lease_id = self._rng.getrandbits(62) + 1
            if lease_id not in self.leases:
                return lease_id

    async def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease and delete its keys at one revision; returns the revision."""
        async with self._lock:
            self.node.check_serving()
            lease = self.leases.get(lease_id)
            txn = self.mvcc.begin()
            try:
                for key in sorted(lease.keys):
                    execute(txn, DeleteOp(key), self.leases.__contains__)
                change = EtcdChange(
                    revision=txn.revision if txn.records else self.mvcc.revision,
                    added=txn.records,
                    leases_revoked=[lease_id],
                )
                await self.store.save_etcd(change)
            except BaseException:
                txn.rollback()
                raise
            self.leases.revoke(lease_id)
            return self._commit(txn)

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease; its granted TTL, or 0 when it does not exist (as etcd)."""
        self.node.check_serving()
        try:
            return self.leases.renew(lease_id, self.clock.monotonic_s()).ttl
        except EtcdError:
            return 0

    def lease_time_to_live(self, lease_id: int) -> tuple[int, Lease | None]:
        """(seconds left, lease); -1 and None when there is no such lease."""
        lease = self.leases.leases.get(lease_id)
        if lease is None:
            return -1, None
        return lease.remaining(self.clock.monotonic_s()), lease

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK_S)
            try:
                self.node.check_serving()
            except Exception:
                continue
            for lease_id in self.leases.expired(self.clock.monotonic_s()):
                try:
                    await self.lease_revoke(lease_id)
                    log.info("lease expired", extra={"lease": lease_id})
                except EtcdError:
                    pass  # revoked meanwhile
                except Exception:
                    log.exception("could not revoke an expired lease")

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval_s)
            self.hub.notify_progress()
