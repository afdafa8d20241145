"""The etcd v3 API on sidecars against the real API server: followers relay to the
pd-leader (streams too), the data is in ConfigMaps, and keys, revisions and leases
survive the pd-leader's failover. Driven with etcdctl and the official Go client."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from pathlib import Path

import pytest

from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.etcd_store import WRITE_BYTES
from tests.conformance.gobuild import build_etcdctl
from tests.support.etcdtools import etcdclient, etcdctl
from tests.support.sidecars import Pods, Sidecar, wait_leader

pytestmark = pytest.mark.timeout(300)


def ctl(
    sc: Sidecar, *args: str, ok: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return etcdctl(sc.address, *args, ok=ok, stdin=stdin)


def scenario(sc: Sidecar, name: str) -> dict[str, object]:
    return etcdclient(sc.address, name)


async def knows_leader(sc: Sidecar, timeout: float = 15.0) -> None:
    """`sc` answers etcd calls: the pd-leader once its etcd data is loaded (after it
    serves TSO), a follower once it has seen the Lease."""
    deadline = time.monotonic() + timeout
    while ctl(sc, "get", "/probe", ok=False).returncode != 0:
        assert time.monotonic() < deadline, f"{sc.pod} never relayed to the pd-leader"
        await asyncio.sleep(0.2)


def start_watch(sc: Sidecar, key: str, rev: int, out: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`etcdctl watch` from revision `rev`, its output in `out`."""
    f = open(out, "wb")  # noqa: SIM115 - the child keeps it
    cmd = [
        str(build_etcdctl()),
        f"--endpoints={sc.address}",
        "watch",
        key,
        f"--rev={rev}",
        "-w",
        "json",
    ]
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), out


async def until_printed(
    watchers: list[tuple[subprocess.Popen[bytes], Path]], value: str, rev: int
) -> None:
    """Every watcher has printed the put of `value` at revision `rev`."""
    want = f'"mod_revision":{rev},'
    encoded = base64.b64encode(value.encode()).decode()
    deadline = time.monotonic() + 30
    for _, out in watchers:
        while not any(want in ln and encoded in ln for ln in out.read_text().splitlines()):
            assert time.monotonic() < deadline, f"{out.name} never saw {value}@{rev}"
            await asyncio.sleep(0.2)


async def test_etcd_through_followers_in_configmaps_and_across_failover(
    pods: Pods, kube: KubeClient, tmp_path: Path
) -> None:
    leader = await wait_leader(kube, pods)
    a, b = (sc for sc in pods.sidecars if sc is not leader)
    for sc in (leader, a, b):  # a follower relays once it has seen who holds the pd-leader Lease
        await knows_leader(sc)
    ctl(a, "put", "/k", "v1")
    ctl(b, "put", "/k", "v2")
    lease = ctl(a, "lease", "grant", "600").stdout.split()[1]
    ctl(b, "put", "/leased", "x", f"--lease={lease}")
    assert ctl(leader, "get", "/k", "--print-value-only").stdout.strip() == "v2"
    # The Go client's streams (watch, keep-alive, election) through a follower.
    watch = scenario(a, "watch")
    assert watch["events"] == [
        "PUT /w/a=1",
        "PUT /w/b=2",
        "DELETE /w/a= prev=1",
        "PUT /w/c=3",
        "PUT /w/b=22 prev=2",
    ]
    election = scenario(b, "election")
    assert election["observed"] == ["one", "two"]
    # The data is in ConfigMaps the API server holds, visible with kubectl.
    cms = await kube.list(
        f"/api/v1/namespaces/{pods.namespace}/configmaps",
        label_selector=f"kubepd.io/cluster={pods.name},kubepd.io/etcd",
    )
    names = {cm["metadata"]["name"] for cm in cms}
    assert f"{pods.name}-etcd" in names and f"{pods.name}-etcd-000001" in names
    # Past the size limit: a clear error, and nothing written.
    before = json.loads(ctl(a, "get", "/k", "-w", "json").stdout)["header"]["revision"]
    big = ctl(a, "put", "/big", ok=False, stdin="x" * WRITE_BYTES)
    assert (
        big.returncode != 0
        and "on Kubernetes one write holds at most 768 KiB encoded" in big.stderr
    )
    assert json.loads(ctl(a, "get", "/k", "-w", "json").stdout)["header"]["revision"] == before

    # Watchers through each follower, to see that their watches resume after failover
    # (from a revision the Go client's compaction above kept).
    put = json.loads(ctl(a, "put", "/k", "v2", "-w", "json").stdout)
    rev = put["header"]["revision"]
    watchers = [start_watch(sc, "/k", rev, tmp_path / f"watch-{sc.pod}.out") for sc in (a, b)]
    try:
        await until_printed(watchers, "v2", rev)  # both are established
        pods.kill9(leader)
        new = await wait_leader(kube, pods, among=[a, b])
        for sc in (a, b):  # the new leader has loaded the ConfigMaps; the other relays
            await knows_leader(sc)
        after = json.loads(ctl(new, "put", "/k", "v3", "-w", "json").stdout)
        await until_printed(watchers, "v3", after["header"]["revision"])
    finally:
        for proc, _ in watchers:
            proc.kill()
            proc.wait()
    survivor = b if new is a else a
    old = json.loads(ctl(survivor, "get", "/k", f"--rev={rev}", "-w", "json").stdout)
    kv = old["kvs"][0]
    assert (kv["version"], kv["mod_revision"], kv["value"]) == (3, rev, "djI=")  # "v2"
    ttl = ctl(survivor, "lease", "timetolive", lease, "--keys").stdout
    assert "attached keys([/leased])" in ttl  # the lease survived the failover
    assert after["header"]["revision"] > rev
    ctl(survivor, "lease", "revoke", lease)
    assert ctl(new, "get", "/leased").stdout == ""
