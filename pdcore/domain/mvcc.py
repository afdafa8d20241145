"""A multi-version key-value store with etcd's revision semantics, in memory and pure.

Every change (a put, or a deletion marked by a tombstone) is a `Record` at a
(revision, sub) pair: one revision per write request, one sub-revision per key it
changes. Each key keeps its records in revision order, so a read at any revision not
yet compacted sees the store as it was. Compaction drops what no read at or after the
compact revision can see. The service persists records and replays them at start.

Ranges follow etcd: `end=None` is the single key, `end=b""` every key from `key` on,
otherwise the half-open interval [key, end).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """One durable change. A tombstone's kv has only key and mod_revision."""

    revision: int
    sub: int
    kv: KeyValue
    tombstone: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class RangeQuery:
    key: bytes
    end: bytes | None = None
    revision: int = 0  # <= 0: the current revision
    limit: int = 0
    sort_order: int = SortOrder.NONE  # ints: the wire may carry values out of range
    sort_target: int = SortTarget.KEY
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(slots=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int
    more: bool


def range_end(raw: bytes) -> bytes | None:
    """The wire's range_end as a store range end: empty is one key, "\\0" unbounded."""
    if not raw:
        return None
    return b"" if raw == b"\x00" else raw


def in_range(k: bytes, key: bytes, end: bytes | None) -> bool:
    if end is None:
        return k == key
    return k >= key and (end == b"" or k < end)


_SORT_KEYS = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def _passes_filters(kv: KeyValue, q: RangeQuery) -> bool:
    return not (
        (q.min_mod_revision and kv.mod_revision < q.min_mod_revision)
        or (q.max_mod_revision and kv.mod_revision > q.max_mod_revision)
        or (q.min_create_revision and kv.create_revision < q.min_create_revision)
        or (q.max_create_revision and kv.create_revision > q.max_create_revision)
    )


class Mvcc:
    def __init__(self) -> None:
        self.revision = 1  # what reads see; a fresh etcd starts at revision 1
        self.head = 1  # the last revision written: above `revision` while a batch is unpublished
        self.compact_revision = 0
        self._history: dict[bytes, list[Record]] = {}
        self._keys: list[bytes] = []  # sorted; keys with any record kept

    # -- restore ------------------------------------------------------------
    def restore(self, revision: int, compact_revision: int, records: Iterable[Record]) -> None:
        self.__init__()  # type: ignore[misc]
        for rec in sorted(records, key=lambda r: (r.revision, r.sub)):
            self._append(rec)
        self.revision = max(1, revision, *(r[-1].revision for r in self._history.values()))
        self.head = self.revision
        self.compact_revision = compact_revision

    def _append(self, rec: Record) -> None:
        recs = self._history.get(rec.kv.key)
        if recs is None:
            self._history[rec.kv.key] = [rec]
            bisect.insort(self._keys, rec.kv.key)
        else:
            recs.append(rec)

    # -- reads ----------------------------------------------------------------
    def check_revision(self, revision: int) -> int:
        """The revision a read at `revision` sees (<= 0: the current one)."""
        if revision <= 0:
            return self.revision
        if revision > self.revision:
            raise EtcdError(EtcdErrorKind.FUTURE_REV)
        if revision < self.compact_revision:
            raise EtcdError(EtcdErrorKind.COMPACTED)
        return revision

    def _keys_in(self, key: bytes, end: bytes | None) -> Iterator[bytes]:
        if end is None:
            if key in self._history:
                yield key
            return
        i = bisect.bisect_left(self._keys, key)
        keys = self._keys
        while i < len(keys) and (end == b"" or keys[i] < end):
            yield keys[i]
            i += 1

    def _at(self, key: bytes, revision: int) -> Record | None:
        """The latest record of `key` at or before `revision`."""
        recs = self._history.get(key)
        if not recs:
            return None
        i = len(recs)
        while i > 0 and recs[i - 1].revision > revision:
            i -= 1
        return recs[i - 1] if i else None

    def get(self, key: bytes, revision: int | None = None) -> KeyValue | None:
        rec = self._at(key, self.revision if revision is None else revision)
        return None if rec is None or rec.tombstone else rec.kv

    def live(self, key: bytes, end: bytes | None, revision: int) -> Iterator[KeyValue]:
        for k in self._keys_in(key, end):
            rec = self._at(k, revision)
            if rec is not None and not rec.tombstone:
                yield rec.kv

    def range(self, q: RangeQuery, revision: int | None = None) -> RangeResult:
        """etcd's Range: count is every live key in the range; filters, sorting and
        the limit apply after it, and `more` says the limit cut something off."""
        try:
            order, target = SortOrder(q.sort_order), SortTarget(q.sort_target)
        except ValueError:
            raise EtcdError(EtcdErrorKind.INVALID_SORT) from None
        rev = self.check_revision(q.revision) if revision is None else revision
        kvs = list(self.live(q.key, q.end, rev))
        count = len(kvs)
        if q.count_only:
            return RangeResult([], count, False)
        kvs = [kv for kv in kvs if _passes_filters(kv, q)]
        if order == SortOrder.NONE and target != SortTarget.KEY:
            order = SortOrder.ASCEND  # etcd sorts by a non-key target even without order
        if order != SortOrder.NONE and not (target == SortTarget.KEY and order == SortOrder.ASCEND):
            kvs.sort(key=_SORT_KEYS[target], reverse=order == SortOrder.DESCEND)
        more = 0 < q.limit < len(kvs)
        if more:
            kvs = kvs[: q.limit]
        if q.keys_only:
            kvs = [replace(kv, value=b"") for kv in kvs]
        return RangeResult(kvs, count, more)

    def events_since(self, start: int, key: bytes, end: bytes | None) -> list[tuple[Record, Event]]:
        """Every change in range from revision `start` up to the current one, in order,
        as etcd's watch replays history (the caller checks compaction first)."""
        out: list[tuple[Record, Event]] = []
        for k in self._keys_in(key, end):
            recs = self._history[k]
            for i, rec in enumerate(recs):
                if rec.revision < start or rec.revision > self.revision:
                    continue
                prev = recs[i - 1] if i else None
                prev_kv = None if prev is None or prev.tombstone else prev.kv
                kind = EventType.DELETE if rec.tombstone else EventType.PUT
                out.append((rec, Event(kind, rec.kv, prev_kv)))
        out.sort(key=lambda pair: (pair[0].revision, pair[0].sub))
        return out

    def size_bytes(self) -> int:
        """Bytes of keys and values kept, history included (etcd's dbSize, roughly)."""
        return sum(len(r.kv.key) + len(r.kv.value) for recs in self._history.values() for r in recs)

    # -- writes ---------------------------------------------------------------
    def begin(self) -> WriteTxn:
        """A write on top of everything written so far (published or not)."""
        return WriteTxn(self, self.head)

    def publish(self) -> int:
        """Make every applied write visible to reads and watches."""
        self.revision = self.head
        return self.revision

    def compact(self, revision: int) -> list[Record]:
        """Forget what no read at or after `revision` needs; return the dropped records."""
        if revision > self.revision:
            raise EtcdError(EtcdErrorKind.FUTURE_REV)
        if revision <= self.compact_revision:
            raise EtcdError(EtcdErrorKind.COMPACTED)
        dropped: list[Record] = []
        emptied: list[bytes] = []
        for k, recs in self._history.items():
            i = 0
            while i + 1 < len(recs) and recs[i + 1].revision <= revision:
                i += 1
            keep_from = i
            if recs[i].revision <= revision and recs[i].tombstone:
                keep_from = i + 1
            elif recs[i].revision > revision:
                keep_from = 0
            if keep_from:
                dropped.extend(recs[:keep_from])
                del recs[:keep_from]
                if not recs:
                    emptied.append(k)
        for k in emptied:
            del self._history[k]
        if emptied:
            gone = set(emptied)
            self._keys = [k for k in self._keys if k not in gone]
        self.compact_revision = revision
        return dropped


@dataclass(slots=True)
class WriteTxn:
    """The changes of one write request, all at revision `base + 1`.

    They are visible to reads through this txn at once (etcd's txns read their own
    writes), to the next txn of a batch after `apply`, and to everyone after the store
    publishes. `rollback` undoes them (in reverse order of `begin`, for a batch)."""

    store: Mvcc
    base: int  # the store's head when this txn began
    records: list[Record] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    _new_keys: list[bytes] = field(default_factory=list)

    @property
    def revision(self) -> int:
        return self.base + 1

    def read_revision(self) -> int:
        return self.revision if self.records else self.base

    def _add(self, rec: Record, event: Event) -> None:
        if rec.kv.key not in self.store._history:
            self._new_keys.append(rec.kv.key)
        self.store._append(rec)
        self.records.append(rec)
        self.events.append(event)

    def put(
        self, key: bytes, value: bytes | None, lease: int | None
    ) -> tuple[KeyValue, KeyValue | None]:
        """Put `key`; None for value or lease keeps the current one (ignore_value /
        ignore_lease), which needs the key to exist. Returns (new, previous)."""
        prev = self.store.get(key, self.read_revision())
        if prev is None and (value is None or lease is None):
            raise EtcdError(EtcdErrorKind.KEY_NOT_FOUND)
        rev = self.revision
        kv = KeyValue(
            key=key,
            create_revision=prev.create_revision if prev else rev,
            mod_revision=rev,
            version=prev.version + 1 if prev else 1,
            value=value if value is not None else prev.value,  # type: ignore[union-attr]
            lease=lease if lease is not None else prev.lease,  # type: ignore[union-attr]
        )
        self._add(Record(rev, len(self.records), kv), Event(EventType.PUT, kv, prev))
        return kv, prev

    def delete(self, key: bytes, end: bytes | None) -> list[KeyValue]:
        gone = list(self.store.live(key, end, self.read_revision()))
        rev = self.revision
        for prev in gone:
            kv = KeyValue(key=prev.key, create_revision=0, mod_revision=rev, version=0)
            self._add(Record(rev, len(self.records), kv, True), Event(EventType.DELETE, kv, prev))
        return gone

    def rollback(self) -> None:
        for rec in reversed(self.records):
            recs = self.store._history[rec.kv.key]
            recs.pop()
        for k in self._new_keys:
            del self.store._history[k]
            i = bisect.bisect_left(self.store._keys, k)
            del self.store._keys[i]
        self.records.clear()
        self.events.clear()
        self._new_keys.clear()
        self.store.head = self.base

    def apply(self) -> int:
        """Let the next txn build on this one; returns the revision after it."""
        if self.records:
            self.store.head = self.revision
        return self.store.head

    def commit(self) -> int:
        """Apply and publish at once; returns the store's revision after the changes."""
        self.apply()
        return self.store.publish()
