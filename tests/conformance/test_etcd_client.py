"""kubepd's etcd v3 API driven by etcd's own tools: the official Go client
(go.etcd.io/etcd/client/v3 with its concurrency election, see etcdclient/) and
etcdctl, both built from the Go module proxy, against a real `kubepd serve`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdcore.proto import pdpb_pb2
from tests.conformance.gobuild import build_etcdclient, build_etcdctl
from tests.support.etcdtools import etcdclient as run_etcdclient
from tests.support.etcdtools import etcdctl as run_etcdctl
from tests.support.pdproc import PdProcess

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def etcdclient() -> Path:
    return build_etcdclient()


@pytest.fixture(scope="module")
def etcdctl() -> Path:
    return build_etcdctl()


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[PdProcess]:
    proc = PdProcess(tmp_path / "data", name="pd-etcd").start()
    try:
        yield proc
    finally:
        proc.stop()


def scenario(etcdclient: Path, pd: PdProcess, name: str, *args: str) -> dict[str, object]:
    return run_etcdclient(pd.address, name, *args)


def ctl(
    etcdctl: Path, pd: PdProcess, *args: str, stdin: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_etcdctl(pd.address, *args, stdin=stdin, ok=ok)


def test_go_client_kv_range_txn_compaction_and_typed_errors(
    etcdclient: Path, pd: PdProcess
) -> None:
    r = scenario(etcdclient, pd, "kv")
    assert r["prefix"] == ["/app/a=10", "/app/b=2", "/app/c=3"] and r["count"] == 3
    assert (r["prev_value"], r["prev_version"]) == ("1", 1)
    assert r["limit"] == ["/app/a=10", "/app/b=2"] and r["limit_more"] is True
    assert r["limit_count"] == 3
    assert r["at_first_rev"] == ["/app/a=1"]
    assert r["keys_only"] == ["/app/a=", "/app/b=", "/app/c="]
    assert r["count_only"] == [3, 0]
    assert r["range"] == ["/app/a=10", "/app/b=2"]
    assert r["desc"] == ["/app/c=3", "/app/b=2", "/app/a=10"]
    assert r["txn_ok"] is True and r["txn_read_own_write"] == "yes"
    assert r["txn2_ok"] is False and r["txn2_else"] == "yes"
    assert (r["deleted"], r["deleted_prev"], r["after_delete"]) == (4, 4, 0)
    # the Go client recognizes each error as its own typed error (etcd's messages)
    for err in (
        "compacted_err",
        "future_err",
        "empty_key_err",
        "lease_not_found_err",
        "too_many_ops_err",
        "duplicate_key_err",
    ):
        assert r[err] is True, err


def test_go_client_watch_history_live_progress_cancel_compacted(
    etcdclient: Path, pd: PdProcess
) -> None:
    r = scenario(etcdclient, pd, "watch")
    assert r["events"] == [
        "PUT /w/a=1",
        "PUT /w/b=2",
        "DELETE /w/a= prev=1",
        "PUT /w/c=3",
        "PUT /w/b=22 prev=2",
    ]
    assert r["progress_is_current"] is True
    assert r["closed_after_cancel"] is True
    assert r["compacted_watch"] is True and int(r["compact_revision"]) > 0  # type: ignore[call-overload]


def test_go_client_leases_keepalive_expiry_revoke(etcdclient: Path, pd: PdProcess) -> None:
    r = scenario(etcdclient, pd, "lease")
    assert r["granted_ttl"] == 30 and r["ttl_granted"] == 30 and r["ttl_left_ok"] is True
    assert r["ttl_keys"] == ["/lease/g/k1", "/lease/g/k2"]
    assert r["listed"] is True and r["keepalive_ttl"] == 30
    assert r["kept_alive"] is True
    assert r["expired_key_gone"] is True
    assert r["revoked_keys_gone"] is True and r["ttl_after_revoke"] == -1
    assert r["revoke_again_not_found"] is True and r["ttl_too_large"] is True


def test_go_client_concurrency_election(etcdclient: Path, pd: PdProcess) -> None:
    r = scenario(etcdclient, pd, "election")
    assert r["second_waits"] is True
    assert r["observed"] == ["one", "two"] and r["leader_now"] == "two"
    assert r["no_leader_after_close"] is True


def test_alloc_id_put_raises_pd_id_allocator_never_lowers(etcdclient: Path, pd: PdProcess) -> None:
    cid = pd.cluster_id()
    stub = pd.stub()
    h = pdpb_pb2.RequestHeader(cluster_id=cid)
    before_id = stub.AllocID(pdpb_pb2.AllocIDRequest(header=h), timeout=5).id
    mark = 1_000_000
    r = scenario(etcdclient, pd, "allocid", "-key", f"/pd/{cid}/alloc_id", "-mark", str(mark))
    assert int(r["before"]) >= before_id  # type: ignore[call-overload]
    assert r["after"] == mark and r["after_lower_put"] == mark
    assert "InvalidArgument" in str(r["bad_value_err"])
    assert "8-byte" in str(r["bad_value_err"])
    assert stub.AllocID(pdpb_pb2.AllocIDRequest(header=h), timeout=5).id > mark


def test_etcdctl_kv_txn_lease_member_status(etcdctl: Path, pd: PdProcess) -> None:
    ctl(etcdctl, pd, "put", "/t/a", "1")
    ctl(etcdctl, pd, "put", "/t/b", "2")
    got = json.loads(ctl(etcdctl, pd, "get", "/t/", "--prefix", "-w", "json").stdout)
    assert got["count"] == 2 and got["header"]["cluster_id"] == pd.cluster_id()
    assert ctl(etcdctl, pd, "get", "/t/", "--prefix", "--keys-only").stdout.split() == [
        "/t/a",
        "/t/b",
    ]
    txn = ctl(
        etcdctl, pd, "txn", stdin='value("/t/a") = "1"\n\nput /t/a 11\n\nput /t/a 0\n\n'
    ).stdout
    assert txn.startswith("SUCCESS")
    assert ctl(etcdctl, pd, "get", "/t/a", "--print-value-only").stdout.strip() == "11"
    assert ctl(etcdctl, pd, "del", "/t/", "--prefix").stdout.strip() == "2"
    lease = ctl(etcdctl, pd, "lease", "grant", "60").stdout.split()[1]
    ctl(etcdctl, pd, "put", "/t/l", "v", f"--lease={lease}")
    ttl = ctl(etcdctl, pd, "lease", "timetolive", lease, "--keys").stdout
    assert "attached keys([/t/l])" in ttl
    assert lease in ctl(etcdctl, pd, "lease", "list").stdout
    ctl(etcdctl, pd, "lease", "revoke", lease)
    assert ctl(etcdctl, pd, "get", "/t/l").stdout == ""
    members = json.loads(ctl(etcdctl, pd, "member", "list", "-w", "json").stdout)
    assert [m["name"] for m in members["members"]] == ["pd-etcd"]
    status = json.loads(ctl(etcdctl, pd, "endpoint", "status", "-w", "json").stdout)
    assert status[0]["Status"]["leader"] == members["members"][0]["ID"]
    health = ctl(etcdctl, pd, "endpoint", "health")
    assert "is healthy" in health.stdout + health.stderr
    # etcdctl shows etcd's own message for bad input
    gone = ctl(etcdctl, pd, "lease", "revoke", lease, ok=False)
    assert "etcdserver: requested lease not found" in gone.stderr


def test_etcdctl_data_and_revisions_survive_restart(etcdctl: Path, pd: PdProcess) -> None:
    ctl(etcdctl, pd, "put", "/durable/k", "v1")
    put = json.loads(ctl(etcdctl, pd, "put", "/durable/k", "v2", "-w", "json").stdout)
    rev = put["header"]["revision"]
    lease = ctl(etcdctl, pd, "lease", "grant", "600").stdout.split()[1]
    ctl(etcdctl, pd, "put", "/durable/leased", "x", f"--lease={lease}")
    pd.kill9()
    pd.start()
    got = json.loads(ctl(etcdctl, pd, "get", "/durable/k", "-w", "json").stdout)
    kv = got["kvs"][0]
    assert (kv["version"], kv["mod_revision"]) == (2, rev)
    assert got["header"]["revision"] >= rev + 1  # the leased put came after it
    old = ctl(etcdctl, pd, "get", "/durable/k", f"--rev={rev - 1}", "--print-value-only")
    assert old.stdout.strip() == "v1"  # history survives too
    assert (
        "attached keys([/durable/leased])"
        in ctl(etcdctl, pd, "lease", "timetolive", lease, "--keys").stdout
    )
    after = json.loads(ctl(etcdctl, pd, "put", "/durable/k", "v3", "-w", "json").stdout)
    assert after["header"]["revision"] > got["header"]["revision"]
