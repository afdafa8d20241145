"""The pure etcd MVCC store, txn logic and lease table: revisions, ranges, compaction,
compares, read-your-writes, rollback, and etcd's errors for bad input."""

from __future__ import annotations

import pytest

from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.domain.etcd_ops import (
    MAX_TXN_OPS,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteOp,
    DeleteResult,
    PutOp,
    PutResult,
    TxnOp,
    TxnResult,
    execute,
    validate,
)
from pdcore.domain.leases import MAX_TTL_S, MIN_TTL_S, LeaseTable
from pdcore.domain.mvcc import (
    EventType,
    Mvcc,
    RangeQuery,
    RangeResult,
    SortOrder,
    SortTarget,
    range_end,
)


def run(m: Mvcc, op: object, leases: set[int] | None = None) -> tuple[object, int]:
    validate(op)  # type: ignore[arg-type]
    txn = m.begin()
    try:
        res = execute(txn, op, (leases or set()).__contains__)  # type: ignore[arg-type]
    except EtcdError:
        txn.rollback()
        raise
    return res, txn.commit()


def put(m: Mvcc, key: bytes, value: bytes, lease: int = 0) -> int:
    return run(m, PutOp(key, value, lease), {lease} if lease else None)[1]


def keys(r: RangeResult) -> list[bytes]:
    return [kv.key for kv in r.kvs]


def test_revisions_versions_and_reads_at_old_revisions() -> None:
    m = Mvcc()
    assert m.revision == 1
    r1 = put(m, b"a", b"1")
    r2 = put(m, b"a", b"2")
    put(m, b"b", b"x")
    assert (r1, r2, m.revision) == (2, 3, 4)
    kv = m.get(b"a")
    assert kv is not None and (kv.create_revision, kv.mod_revision, kv.version) == (2, 3, 2)
    old = m.range(RangeQuery(b"a", revision=r1))
    assert [kv.value for kv in old.kvs] == [b"1"]
    assert keys(m.range(RangeQuery(b"a", b"", revision=r2))) == [b"a"]  # b came later
    run(m, DeleteOp(b"a"))
    assert m.get(b"a") is None
    assert m.get(b"a", revision=r2) is not None
    again = put(m, b"a", b"3")
    new = m.get(b"a")
    assert new is not None and (new.create_revision, new.version) == (again, 1)


def test_range_ends_limits_count_keys_only_and_sorting() -> None:
    m = Mvcc()
    for k, v in [(b"k1", b"c"), (b"k2", b"a"), (b"k3", b"b"), (b"z", b"z")]:
        put(m, k, v)
    assert range_end(b"") is None and range_end(b"\x00") == b""
    assert keys(m.range(RangeQuery(b"k", b"l"))) == [b"k1", b"k2", b"k3"]
    assert keys(m.range(RangeQuery(b"k2", b""))) == [b"k2", b"k3", b"z"]  # from key on
    assert keys(m.range(RangeQuery(b"k3", b"k1"))) == []  # end before key: nothing
    lim = m.range(RangeQuery(b"k", b"l", limit=2))
    assert (keys(lim), lim.count, lim.more) == ([b"k1", b"k2"], 3, True)
    assert m.range(RangeQuery(b"k", b"l", limit=3)).more is False
    co = m.range(RangeQuery(b"k", b"l", count_only=True))
    assert (co.kvs, co.count) == ([], 3)
    assert [kv.value for kv in m.range(RangeQuery(b"k", b"l", keys_only=True)).kvs] == [b""] * 3
    by_value = m.range(RangeQuery(b"k", b"l", sort_target=SortTarget.VALUE))  # NONE: ascend
    assert keys(by_value) == [b"k2", b"k3", b"k1"]
    desc = m.range(
        RangeQuery(b"k", b"l", sort_order=SortOrder.DESCEND, sort_target=SortTarget.CREATE)
    )
    assert keys(desc) == [b"k3", b"k2", b"k1"]
    first = m.range(
        RangeQuery(b"k", b"l", limit=1, sort_order=SortOrder.ASCEND, sort_target=SortTarget.MOD)
    )
    assert keys(first) == [b"k1"] and first.more
    newest = m.range(RangeQuery(b"k", b"l", max_create_revision=3, min_create_revision=3))
    assert keys(newest) == [b"k2"]


def test_bad_reads_raise_etcds_errors() -> None:
    m = Mvcc()
    put(m, b"a", b"1")
    with pytest.raises(EtcdError) as e:
        m.range(RangeQuery(b"a", revision=99))
    assert e.value.kind == EtcdErrorKind.FUTURE_REV
    assert str(e.value) == "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(EtcdError) as e:
        m.range(RangeQuery(b"a", sort_order=7))
    assert e.value.kind == EtcdErrorKind.INVALID_SORT
    with pytest.raises(EtcdError) as e:
        validate(RangeQuery(b""))
    assert e.value.kind == EtcdErrorKind.EMPTY_KEY


def test_compaction_keeps_what_later_reads_need_and_rejects_older() -> None:
    m = Mvcc()
    put(m, b"a", b"1")  # 2
    put(m, b"a", b"2")  # 3
    put(m, b"b", b"1")  # 4
    run(m, DeleteOp(b"b"))  # 5
    put(m, b"c", b"1")  # 6
    dropped = m.compact(5)
    # a@2 is shadowed by a@3; b's put and tombstone are both at or below 5
    assert sorted((r.revision, r.kv.key) for r in dropped) == [(2, b"a"), (4, b"b"), (5, b"b")]
    assert [kv.value for kv in m.range(RangeQuery(b"a", revision=5)).kvs] == [b"2"]
    assert keys(m.range(RangeQuery(b"\x00", b""))) == [b"a", b"c"]
    with pytest.raises(EtcdError) as e:
        m.range(RangeQuery(b"a", revision=4))
    assert e.value.kind == EtcdErrorKind.COMPACTED
    with pytest.raises(EtcdError) as e:
        m.compact(5)
    assert e.value.kind == EtcdErrorKind.COMPACTED
    with pytest.raises(EtcdError) as e:
        m.compact(100)
    assert e.value.kind == EtcdErrorKind.FUTURE_REV
    assert m.compact_revision == 5


def test_restore_rebuilds_the_same_store() -> None:
    m = Mvcc()
    put(m, b"a", b"1")
    put(m, b"a", b"2")
    run(m, DeleteOp(b"a"))
    put(m, b"b", b"1")
    records = [r for k in (b"a", b"b") for r in m._history[k]]
    copy = Mvcc()
    copy.restore(m.revision, 0, reversed(records))
    assert copy.revision == m.revision
    assert copy.range(RangeQuery(b"\x00", b"")) == m.range(RangeQuery(b"\x00", b""))
    assert copy.range(RangeQuery(b"a", revision=3)).kvs[0].value == b"2"


def test_events_since_replays_history_with_prev_kvs_in_revision_order() -> None:
    m = Mvcc()
    put(m, b"/p/a", b"1")  # 2
    put(m, b"/q", b"x")  # 3
    put(m, b"/p/b", b"1")  # 4
    put(m, b"/p/a", b"2")  # 5
    run(m, DeleteOp(b"/p/", b"/p0"))  # 6: both, one revision
    evs = [ev for _, ev in m.events_since(3, b"/p/", b"/p0")]
    assert [(ev.type, ev.kv.key, ev.kv.mod_revision) for ev in evs] == [
        (EventType.PUT, b"/p/b", 4),
        (EventType.PUT, b"/p/a", 5),
        (EventType.DELETE, b"/p/a", 6),
        (EventType.DELETE, b"/p/b", 6),
    ]
    assert evs[1].prev_kv is not None and evs[1].prev_kv.value == b"1"
    assert evs[2].prev_kv is not None and evs[2].prev_kv.value == b"2"


def test_txn_compares_on_value_version_create_mod_and_missing_keys() -> None:
    m = Mvcc()
    put(m, b"a", b"1")  # 2
    put(m, b"a", b"2")  # 3

    def holds(target: CompareTarget, result: CompareResult, operand: int | bytes) -> bool:
        res, _ = run(m, TxnOp([Compare(b"a", target, result, operand)]))
        assert isinstance(res, TxnResult)
        return res.succeeded

    assert holds(CompareTarget.VALUE, CompareResult.EQUAL, b"2")
    assert holds(CompareTarget.VALUE, CompareResult.GREATER, b"1")
    assert not holds(CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"2")
    assert holds(CompareTarget.VERSION, CompareResult.EQUAL, 2)
    assert holds(CompareTarget.CREATE, CompareResult.EQUAL, 2)
    assert holds(CompareTarget.MOD, CompareResult.LESS, 4)
    assert not holds(CompareTarget.MOD, CompareResult.GREATER, 3)
    assert holds(CompareTarget.LEASE, CompareResult.EQUAL, 0)
    missing = TxnOp([Compare(b"nope", CompareTarget.CREATE, CompareResult.EQUAL, 0)])
    assert isinstance(r := run(m, missing)[0], TxnResult) and r.succeeded
    missing_value = TxnOp([Compare(b"nope", CompareTarget.VALUE, CompareResult.EQUAL, b"")])
    assert isinstance(r := run(m, missing_value)[0], TxnResult) and not r.succeeded


def test_txn_is_one_revision_reads_its_own_writes_and_picks_a_branch() -> None:
    m = Mvcc()
    put(m, b"a", b"1")
    cas = TxnOp(
        [Compare(b"a", CompareTarget.VALUE, CompareResult.EQUAL, b"1")],
        success=[PutOp(b"a", b"2"), PutOp(b"b", b"x"), RangeQuery(b"a", b"c")],
        failure=[RangeQuery(b"a")],
    )
    res, rev = run(m, cas)
    assert isinstance(res, TxnResult) and res.succeeded and rev == 3
    seen = res.responses[2]
    assert isinstance(seen, RangeResult) and [kv.value for kv in seen.kvs] == [b"2", b"x"]
    assert {kv.mod_revision for kv in seen.kvs} == {3}
    res2, rev2 = run(m, cas)  # now a is "2": the failure branch, which only reads
    assert isinstance(res2, TxnResult) and not res2.succeeded and rev2 == 3


def test_failing_op_inside_a_txn_rolls_everything_back() -> None:
    m = Mvcc()
    put(m, b"a", b"1")
    bad = TxnOp(success=[PutOp(b"new", b"x"), PutOp(b"gone", ignore_value=True)])
    with pytest.raises(EtcdError) as e:
        run(m, bad)
    assert e.value.kind == EtcdErrorKind.KEY_NOT_FOUND
    assert m.revision == 2 and m.get(b"new") is None and b"new" not in m._keys
    leased = TxnOp(success=[PutOp(b"a", b"2"), PutOp(b"b", b"1", lease=7)])
    with pytest.raises(EtcdError) as e:
        run(m, leased)
    assert e.value.kind == EtcdErrorKind.LEASE_NOT_FOUND
    kv = m.get(b"a")
    assert kv is not None and kv.value == b"1" and m.revision == 2


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        (PutOp(b""), EtcdErrorKind.EMPTY_KEY),
        (DeleteOp(b""), EtcdErrorKind.EMPTY_KEY),
        (PutOp(b"k", b"v", ignore_value=True), EtcdErrorKind.VALUE_PROVIDED),
        (PutOp(b"k", lease=5, ignore_lease=True), EtcdErrorKind.LEASE_PROVIDED),
        (TxnOp(success=[PutOp(b"k%d" % i) for i in range(129)]), EtcdErrorKind.TOO_MANY_OPS),
        (TxnOp(success=[PutOp(b"k"), PutOp(b"k")]), EtcdErrorKind.DUPLICATE_KEY),
        (TxnOp(success=[DeleteOp(b"a", b"z"), PutOp(b"k")]), EtcdErrorKind.DUPLICATE_KEY),
        (TxnOp(success=[PutOp(b"k"), TxnOp(success=[PutOp(b"k")])]), EtcdErrorKind.DUPLICATE_KEY),
        (TxnOp(failure=[RangeQuery(b"")]), EtcdErrorKind.EMPTY_KEY),
    ],
)
def test_validation_rejects_bad_requests_with_etcds_errors(op: object, kind: EtcdErrorKind) -> None:
    with pytest.raises(EtcdError) as e:
        validate(op)  # type: ignore[arg-type]
    assert e.value.kind == kind and str(e.value) == kind.value


def test_validation_allows_what_etcd_allows() -> None:
    validate(TxnOp(success=[PutOp(b"k%d" % i) for i in range(MAX_TXN_OPS)]))
    # the two branches of a nested txn are alternatives
    validate(TxnOp(success=[TxnOp(success=[PutOp(b"k")], failure=[PutOp(b"k")])]))


def test_put_prev_kv_and_delete_results() -> None:
    m = Mvcc()
    put(m, b"a", b"1")
    res, _ = run(m, PutOp(b"a", b"2", prev_kv=True))
    assert isinstance(res, PutResult) and res.prev_kv is not None and res.prev_kv.value == b"1"
    res, _ = run(m, PutOp(b"a", ignore_value=True))  # keeps the value, new version
    kv = m.get(b"a")
    assert kv is not None and (kv.value, kv.version) == (b"2", 3)
    gone, rev = run(m, DeleteOp(b"a", prev_kv=True))
    assert isinstance(gone, DeleteResult) and gone.deleted == 1 and gone.prev_kvs[0].value == b"2"
    none, rev2 = run(m, DeleteOp(b"a"))
    assert isinstance(none, DeleteResult) and none.deleted == 0 and rev2 == rev  # no new rev


def test_lease_table_grant_renew_expire_and_errors() -> None:
    t = LeaseTable()
    lease = t.grant(1, 1, now=100.0)
    assert lease.ttl == MIN_TTL_S and lease.expiry == 100.0 + MIN_TTL_S
    with pytest.raises(EtcdError) as e:
        t.grant(1, 10, now=100.0)
    assert e.value.kind == EtcdErrorKind.LEASE_EXIST
    with pytest.raises(EtcdError) as e:
        t.grant(2, MAX_TTL_S + 1, now=100.0)
    assert e.value.kind == EtcdErrorKind.LEASE_TTL_TOO_LARGE and 2 not in t
    t.grant(3, 10, now=100.0)
    assert t.expired(101.9) == []
    t.renew(1, now=101.5)
    assert t.expired(103.0) == [] and t.expired(103.5) == [1]
    assert t.get(3).remaining(104.2) == 6
    t.attach(3, b"k")
    assert t.revoke(3).keys == {b"k"}
    with pytest.raises(EtcdError) as e:
        t.renew(3, now=105.0)
    assert e.value.kind == EtcdErrorKind.LEASE_NOT_FOUND
