"""etcd's KV requests as plain data, their validation and their execution on `Mvcc`.

A request is validated whole before anything runs (bad input changes nothing); the
execution of a write request then happens in one `WriteTxn`, which the caller
rolls back if a later op in a txn fails.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.domain.mvcc import KeyValue, RangeQuery, RangeResult, WriteTxn, in_range

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


@dataclass(frozen=True, slots=True)
class PutOp:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: bytes
    end: bytes | None = None
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    key: bytes
    target: int  # CompareTarget
    result: int  # CompareResult
    operand: int | bytes = 0
    end: bytes | None = None


@dataclass(frozen=True, slots=True)
class TxnOp:
    compares: Sequence[Compare] = ()
    success: Sequence[Op] = ()
    failure: Sequence[Op] = ()


Op = RangeQuery | PutOp | DeleteOp | TxnOp


@dataclass(slots=True)
class PutResult:
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class DeleteResult:
    deleted: int = 0
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(slots=True)
class TxnResult:
    succeeded: bool
    responses: list[OpResult]


OpResult = RangeResult | PutResult | DeleteResult | TxnResult


def validate(op: Op) -> None:
    """etcd's request checks, with its messages."""
    if isinstance(op, TxnOp):
        if max(len(op.compares), len(op.success), len(op.failure)) > MAX_TXN_OPS:
            raise EtcdError(EtcdErrorKind.TOO_MANY_OPS)
        for sub in (*op.success, *op.failure):
            validate(sub)
        _check_intervals(op.success)
        _check_intervals(op.failure)
        return
    if not op.key:
        raise EtcdError(EtcdErrorKind.EMPTY_KEY)
    if isinstance(op, PutOp):
        if op.ignore_value and op.value:
            raise EtcdError(EtcdErrorKind.VALUE_PROVIDED)
        if op.ignore_lease and op.lease:
            raise EtcdError(EtcdErrorKind.LEASE_PROVIDED)


def _check_intervals(ops: Sequence[Op]) -> tuple[set[bytes], list[tuple[bytes, bytes | None]]]:
    """A key may be written once per txn branch: no two puts of it, no put inside a
    deleted range (nested txns' branches are alternatives, so they are merged)."""
    puts: set[bytes] = set()
    dels: list[tuple[bytes, bytes | None]] = []
    for op in ops:
        if isinstance(op, PutOp):
            if op.key in puts:
                raise EtcdError(EtcdErrorKind.DUPLICATE_KEY)
            puts.add(op.key)
        elif isinstance(op, DeleteOp):
            dels.append((op.key, op.end))
        elif isinstance(op, TxnOp):
            sp, sd = _check_intervals(op.success)
            fp, fd = _check_intervals(op.failure)
            if puts & (sp | fp):
                raise EtcdError(EtcdErrorKind.DUPLICATE_KEY)
            puts |= sp | fp
            dels += sd + fd
    for k in puts:
        if any(in_range(k, key, end) for key, end in dels):
            raise EtcdError(EtcdErrorKind.DUPLICATE_KEY)
    return puts, dels


def writes(op: Op) -> list[PutOp]:
    """Every put a request may make (both branches of a txn)."""
    if isinstance(op, PutOp):
        return [op]
    if isinstance(op, TxnOp):
        return [p for sub in (*op.success, *op.failure) for p in writes(sub)]
    return []


_TARGETS: dict[int, Callable[[KeyValue], int | bytes]] = {
    CompareTarget.VERSION: lambda kv: kv.version,
    CompareTarget.CREATE: lambda kv: kv.create_revision,
    CompareTarget.MOD: lambda kv: kv.mod_revision,
    CompareTarget.VALUE: lambda kv: kv.value,
    CompareTarget.LEASE: lambda kv: kv.lease,
}


def _holds(kv: KeyValue, c: Compare) -> bool:
    get = _TARGETS.get(c.target)
    if get is None:
        return False
    actual, want = get(kv), c.operand
    if type(actual) is not type(want):
        return False
    if c.result == CompareResult.EQUAL:
        return actual == want
    if c.result == CompareResult.NOT_EQUAL:
        return actual != want
    if c.result == CompareResult.GREATER:
        return actual > want  # type: ignore[operator]
    if c.result == CompareResult.LESS:
        return actual < want  # type: ignore[operator]
    return False


def compare_holds(txn: WriteTxn, c: Compare) -> bool:
    """A compare holds when every key in its range satisfies it; a missing key
    compares as zeros, except that a value compare on it fails (as in etcd)."""
    kvs = list(txn.store.live(c.key, c.end, txn.read_revision()))
    if not kvs:
        if c.target == CompareTarget.VALUE:
            return False
        kvs = [KeyValue(key=c.key, create_revision=0, mod_revision=0, version=0)]
    return all(_holds(kv, c) for kv in kvs)


def execute(txn: WriteTxn, op: Op, lease_exists: Callable[[int], bool]) -> OpResult:
    if isinstance(op, RangeQuery):
        rev = txn.read_revision() if op.revision <= 0 else txn.store.check_revision(op.revision)
        return txn.store.range(op, revision=rev)
    if isinstance(op, PutOp):
        if op.lease and not op.ignore_lease and not lease_exists(op.lease):
            raise EtcdError(EtcdErrorKind.LEASE_NOT_FOUND)
        _, prev = txn.put(
            op.key,
            None if op.ignore_value else op.value,
            None if op.ignore_lease else op.lease,
        )
        return PutResult(prev if op.prev_kv else None)
    if isinstance(op, DeleteOp):
        gone = txn.delete(op.key, op.end)
        return DeleteResult(len(gone), gone if op.prev_kv else [])
    ok = all(compare_holds(txn, c) for c in op.compares)
    branch = op.success if ok else op.failure
    return TxnResult(ok, [execute(txn, sub, lease_exists) for sub in branch])
