"""SchedulingPolicy objects on a running cluster (sidecars + the simulator, and a scheduler
host): a policy is loaded and its effect shows, a new config or module replaces it live,
deleting the object unloads it, bad modules and sources fail in status while everything
else keeps going, ConfigMap and URL sources work, and only the scheduler role's holder
runs policies."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import ApiError, KubeClient, Obj
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc, pdpb_pb2, pdpb_pb2_grpc
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from pdsim.runner import distribution
from tests.kube.test_scheduler_host import start_host, wait_holder
from tests.support.ports import free_port
from tests.support.sidecars import (
    Pods,
    Sidecar,
    create_tikv_cluster,
    run_fleet,
    serves_tso,
    wait_leader,
)

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policies() -> Path:
    subprocess.run(["bash", str(ROOT / "policies" / "build.sh")], check=True, capture_output=True)
    return ROOT / "policies" / "build"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Policies:
    """SchedulingPolicy objects of one cluster, and the fleet that must keep running
    (heartbeats carry the effects) while a test waits on them."""

    def __init__(self, kube: KubeClient, pods: Pods, fleet: Fleet) -> None:
        self.kube, self.pods, self.fleet = kube, pods, fleet

    def path(self, name: str = "") -> str:
        return kinds.SCHEDULING_POLICIES.path(self.pods.namespace, name)

    async def create(self, name: str, module: Obj, **spec: Any) -> None:
        body = {"cluster": self.pods.name, "module": module, "intervalSeconds": 1, **spec}
        await self.kube.create(
            self.path(),
            {
                "apiVersion": kinds.API_VERSION,
                "kind": "SchedulingPolicy",
                "metadata": {"name": name},
                "spec": body,
            },
        )

    async def patch_spec(self, name: str, spec: Obj) -> None:
        await self.kube.patch(self.path(name), {"spec": spec})

    async def status(self, name: str) -> Obj:
        return (await self.kube.get(self.path(name))).get("status") or {}

    async def until(self, name: str, pred: Callable[[Obj], bool], timeout: float = 60.0) -> Obj:
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status(name)
            if pred(st):
                return st
            assert time.monotonic() < deadline, f"{name}: status not reached in time: {st}"
            await run_fleet(self.fleet, 0.5)


def ready(st: Obj) -> Obj:
    return next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})


def leaders(fleet: Fleet) -> list[int]:
    return list(distribution(fleet)["leaders"].values())


def skew(fleet: Fleet, layout_store: int) -> None:
    """Move every leader it can to one store (as if TiKV did), so only a leader balancer
    undoes it."""
    sid = sorted(fleet.stores)[layout_store]
    for region in fleet.regions.values():
        p = region.peer_on(sid)
        if p is not None and region.leader_id != p.id:
            region.leader_id = p.id
            fleet.heartbeat(region)


async def balanced_within(fleet: Fleet, gap: int, timeout: float, show: Callable[[], Any]) -> None:
    deadline = time.monotonic() + timeout
    while max(leaders(fleet)) - min(leaders(fleet)) > gap:
        assert time.monotonic() < deadline, f"leaders {leaders(fleet)}; {await show()}"
        await run_fleet(fleet, 0.5)


def http_json(port: int, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/pd/api/v1{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def only_policies_move_leaders(status_port: int) -> None:
    """The holder's built-in balancers go: leaders move only if a policy moves them."""
    for name in ("balance-leader-scheduler", "balance-region-scheduler"):
        http_json(status_port, f"/schedulers/{name}", "DELETE")


async def host_without_balancers(fleet: Fleet, status_port: int) -> None:
    """Once the scheduler host's API answers, leave only policies moving leaders there."""
    deadline = time.monotonic() + 20
    while True:
        try:
            only_policies_move_leaders(status_port)
            return
        except urllib.error.HTTPError:
            raise
        except OSError:
            assert time.monotonic() < deadline, "the scheduler host never answered"
            await run_fleet(fleet, 0.2)


async def deleted_stops_balancing(
    kube: KubeClient, pol: Policies, fleet: Fleet, status_port: int
) -> None:
    """Delete the "balance" policy, skew the leaders again: none move back, and the
    policy makes no more operators."""
    await kube.delete(pol.path("balance"))
    await run_fleet(fleet, 2.0)
    made = operators_by(status_port, "balance")
    skew(fleet, 3)
    await run_fleet(fleet, 5.0)
    assert max(leaders(fleet)) >= 40, leaders(fleet)
    assert operators_by(status_port, "balance") == made


def operators_by(status_port: int, policy: str) -> int:
    done = http_json(status_port, "/operators?history=true&limit=100000")
    running = http_json(status_port, "/operators")
    return sum(1 for op in [*done, *running] if op["scheduler"] == f"policy:{policy}")


def pd_leaders(status_port: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in http_json(status_port, "/regions")["regions"]:
        sid = r["leader"]["store_id"]
        out[sid] = out.get(sid, 0) + 1
    return out


# 4 stores, 60 regions with 3 peers each: every store holds 45 peers (nothing for
# balance-region to do) but 45 leaders sit on the 4th store and none on two others.
LAYOUT = [(3 if 3 in peers else peers[0], peers) for _, peers in round_robin(60, 4)]


@pytest.fixture
async def skewed(pods: Pods, kube: KubeClient, fleet_on: Fleet) -> AsyncIterator[Sidecar]:
    leader = await wait_leader(kube, pods)
    only_policies_move_leaders(leader.status_port)
    await fleet_on.bootstrap(zones(4), LAYOUT, size_mib=16)
    await run_fleet(fleet_on, 4.0)
    assert max(leaders(fleet_on)) == 45, leaders(fleet_on)  # nothing balances leaders
    yield leader


async def test_a_policy_is_loaded_replaced_and_removed_live(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, skewed: Sidecar, policies: Path
) -> None:
    fleet, pol = fleet_on, Policies(kube, pods, fleet_on)
    balance = (policies / "balance_leader.wasm").read_bytes()
    evict = (policies / "evict_slow_store.wasm").read_bytes()

    await pol.create("balance", {"inline": b64(balance)}, config={"batch": 4, "tolerance": 1})
    await balanced_within(fleet, 4, 60, lambda: pol.status("balance"))
    st = await pol.until(
        "balance", lambda s: s.get("phase") == "Running" and s.get("proposalsAccepted", 0) >= 20
    )
    assert st["moduleDigest"] == f"sha256:{sha(balance)}"
    assert st["observedGeneration"] == 1 and st["runs"] >= 1 and st["lastRunTime"]
    assert ready(st)["status"] == "True" and ready(st)["reason"] == "Running"
    assert operators_by(skewed.status_port, "balance") >= 20  # the policy moved them

    # Status is written at a bounded rate although it changes every second.
    versions: set[str] = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 9.0:
        versions.add((await kube.get(pol.path("balance")))["metadata"]["resourceVersion"])
        await run_fleet(fleet, 0.2)
    assert 2 <= len(versions) <= 5, versions

    # A new config is a new generation, loaded live.
    await pol.patch_spec("balance", {"config": {"batch": 2, "tolerance": 2}})
    st = await pol.until(
        "balance",
        lambda s: s.get("observedGeneration") == 2 and ready(s).get("observedGeneration") == 2,
    )
    assert st["phase"] in ("Loaded", "Running") and st["moduleDigest"] == f"sha256:{sha(balance)}"

    # A new module replaces the old one: leaders skewed again stay skewed.
    await pol.patch_spec("balance", {"module": {"inline": b64(evict)}})
    st = await pol.until(
        "balance",
        lambda s: s.get("observedGeneration") == 3 and s.get("phase") == "Running",
    )
    assert st["moduleDigest"] == f"sha256:{sha(evict)}"
    skew(fleet, 3)
    await run_fleet(fleet, 4.0)
    assert max(leaders(fleet)) >= 40, leaders(fleet)
    assert (await pol.status("balance"))["runs"] >= 2  # the new module does run

    # And back: the balancing module again, live.
    await pol.patch_spec("balance", {"module": {"inline": b64(balance)}})
    await balanced_within(fleet, 6, 60, lambda: pol.status("balance"))

    # Deleted: unloaded, nothing moves the leaders back any more.
    await deleted_stops_balancing(kube, pol, fleet, skewed.status_port)


@pytest.fixture
async def module_server(policies: Path) -> AsyncIterator[str]:
    """An http server with the example modules, as a URL source."""
    app = web.Application()
    app.router.add_static("/", str(policies))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_bad_modules_fail_in_status_and_nothing_else_stops(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, policies: Path, module_server: str
) -> None:
    fleet, pol = fleet_on, Policies(kube, pods, fleet_on)
    await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
    await run_fleet(fleet, 1.0)
    leader = await wait_leader(kube, pods)
    balance = (policies / "balance_leader.wasm").read_bytes()
    evict = (policies / "evict_slow_store.wasm").read_bytes()
    cms = kinds.CONFIG_MAPS.path(pods.namespace)

    await pol.create("junk", {"inline": b64(b"this is not a wasm module")})
    await pol.create("wrong-abi", {"inline": b64((policies / "wrong_abi.wat").read_bytes())})
    await pol.create("trap", {"inline": b64((policies / "trap.wat").read_bytes())})
    await pol.create(
        "bad-sha", {"url": f"{module_server}/balance_leader.wasm", "sha256": sha(evict)}
    )
    await pol.create("gone", {"url": f"{module_server}/nothing.wasm", "sha256": sha(evict)})
    await pol.create("oci", {"url": "oci://registry.example/policy:1", "sha256": sha(evict)})
    await pol.create("from-cm", {"configMapRef": {"name": "modules", "key": "policy.wasm"}})
    await pol.create(
        "from-url",
        {"url": f"{module_server}/balance_leader.wasm", "sha256": sha(balance)},
        config={"batch": 2, "tolerance": 3},
    )

    def failed(text: str, reason: str) -> Callable[[Obj], bool]:
        def check(s: Obj) -> bool:
            r = ready(s)
            return (
                s.get("phase") == "Failed"
                and text in s.get("lastError", "")
                and r.get("status") == "False"
                and r.get("reason") == reason
                and text in r.get("message", "")
            )

        return check

    st = await pol.until("junk", failed("not a valid Wasm module", "LoadFailed"))
    assert st["moduleDigest"] == f"sha256:{sha(b'this is not a wasm module')}"
    await pol.until("wrong-abi", failed("ABI version", "LoadFailed"))
    await pol.until("bad-sha", failed(f"the spec says {sha(evict)}", "LoadFailed"))
    await pol.until("gone", failed("HTTP 404", "ModuleUnavailable"))
    await pol.until("oci", failed("not supported", "ModuleUnavailable"))
    await pol.until("from-cm", failed("ConfigMap modules not found", "ModuleUnavailable"))
    st = await pol.until("trap", lambda s: s.get("phase") == "Disabled")
    assert st["lastError"].startswith("trap") and ready(st)["reason"] == "Disabled"
    # ... and each says so in a Warning event on the object.
    for name, reasons in (
        ("junk", {"PolicyLoadFailed"}),
        ("trap", {"PolicyTrapped", "PolicyDisabled"}),
    ):
        deadline = time.monotonic() + 20
        while not reasons <= {e["reason"] for e in await warnings_on(kube, pods.namespace, name)}:
            assert time.monotonic() < deadline, (
                name,
                await warnings_on(kube, pods.namespace, name),
            )
            await run_fleet(fleet, 0.5)
    st = await pol.until("from-url", lambda s: s.get("phase") == "Running" and s["runs"] >= 3)
    assert st["moduleDigest"] == f"sha256:{sha(balance)}"

    # The sidecars kept serving throughout.
    assert all(sc.proc is not None and sc.proc.poll() is None for sc in pods.sidecars)
    assert await serves_tso(leader)

    # The ConfigMap appears: the policy loads from it, and follows a new module there.
    await kube.create(
        cms,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "modules"},
            "binaryData": {"policy.wasm": b64(balance)},
        },
    )
    st = await pol.until("from-cm", lambda s: s.get("phase") in ("Loaded", "Running"), 40)
    assert st["moduleDigest"] == f"sha256:{sha(balance)}" and st["lastError"] == ""
    await kube.patch(f"{cms}/modules", {"binaryData": {"policy.wasm": b64(evict)}})
    await pol.until("from-cm", lambda s: s.get("moduleDigest") == f"sha256:{sha(evict)}", 40)

    # A fixed spec loads, as a new generation.
    await pol.patch_spec("junk", {"module": {"inline": b64(balance)}})
    st = await pol.until("junk", lambda s: s.get("phase") == "Running")
    assert st["observedGeneration"] == 2 and st["lastError"] == ""
    assert ready(st)["status"] == "True"


async def test_only_the_scheduler_roles_holder_runs_policies(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, skewed: Sidecar, policies: Path, tmp_path: Path
) -> None:
    """With the operator's scheduler host holding the role, the policy runs there and the
    pd-leader (which follows the same objects) makes no operator and writes no status;
    when the host dies the pd-leader takes the policy over, its figures continuing."""
    fleet, pol = fleet_on, Policies(kube, pods, fleet_on)
    await create_tikv_cluster(kube, pods.namespace, pods.name)
    seen: list[Obj] = []

    async def record() -> None:  # every status the object goes through
        while True:
            with contextlib.suppress(ApiError):
                st = await pol.status("balance")
                if st and (not seen or st != seen[-1]):
                    seen.append(st)
            await asyncio.sleep(0.2)

    recorder = asyncio.get_running_loop().create_task(record())
    port = free_port()
    host = start_host(pods, "operator-a", tmp_path / "host.log", port)
    try:
        await wait_holder(kube, pods, fleet, "operator-a")
        await host_without_balancers(fleet, port)
        # Whatever its built-in balancer did before it went, only the policy can undo this.
        skew(fleet, 3)
        await run_fleet(fleet, 2.0)
        assert max(leaders(fleet)) >= 40, leaders(fleet)
        balance = (policies / "balance_leader.wasm").read_bytes()
        await pol.create("balance", {"inline": b64(balance)}, config={"batch": 4, "tolerance": 1})

        async def show() -> object:
            return {
                "status": await pol.status("balance"),
                "host operators": http_json(port, "/operators"),
                "pd-leader's leaders": pd_leaders(skewed.status_port),
            }

        await balanced_within(fleet, 4, 90, show)
        st = await pol.until(
            "balance", lambda s: s.get("phase") == "Running" and s["proposalsAccepted"] >= 20
        )
        assert st["moduleDigest"] == f"sha256:{sha(balance)}"
        assert operators_by(port, "balance") >= 20
        assert operators_by(skewed.status_port, "balance") == 0
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()

    # The pd-leader takes the role back, and with it the policy.
    await wait_holder(kube, pods, fleet, skewed.pod + "@")
    skew(fleet, 3)
    await balanced_within(fleet, 4, 60, lambda: pol.status("balance"))
    assert operators_by(skewed.status_port, "balance") >= 10
    final = await pol.until("balance", lambda s: s["runs"] > st["runs"] + 3)
    await run_fleet(fleet, 1.0)
    recorder.cancel()
    # One writer at a time: the figures never went back and the phase never fell back.
    assert final["proposalsAccepted"] > st["proposalsAccepted"], (st, final)
    for before, after in itertools.pairwise(seen):
        assert after["runs"] >= before["runs"], (before, after)
        assert after["proposalsAccepted"] >= before["proposalsAccepted"], (before, after)
        assert before["phase"] != "Running" or after["phase"] == "Running", (before, after)


# -- store-scoped policies ----------------------------------------------------------------

# Traps when its snapshot has a region (only in the sidecar whose stores lead some), and
# otherwise proposes nothing: a failure confined to one sidecar.
TRAP_WHEN_LEADING = """
(module
  (import "kubepd" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "KPDR\\00\\00\\00\\00")
  (global $bump (mut i32) (i32.const 1024))
  (func (export "kubepd_abi_version") (result i32) (i32.const 1))
  (func (export "kubepd_reset") (global.set $bump (i32.const 1024)))
  (func (export "kubepd_alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.const 64)))))
    (local.get $p))
  (func (export "kubepd_schedule") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.load offset=12 (local.get $ptr)) (then unreachable))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 8)))
)
"""


def store_entries(st: Obj) -> dict[str, Obj]:
    return dict(st.get("stores") or {})


async def warnings_on(kube: KubeClient, ns: str, name: str) -> list[Obj]:
    events = await kube.get(
        f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}"
    )
    return [e for e in events.get("items", []) if e.get("type") == "Warning"]


async def propose(sc: Sidecar, cluster_id: int, store_id: int, *props: Any) -> Any:
    async with grpc.aio.insecure_channel(sc.address) as ch:
        return await kubepdpb_pb2_grpc.SchedulerStub(ch).Propose(
            kubepdpb_pb2.ProposeRequest(
                cluster_id=cluster_id, policy="by-hand", store_id=store_id, proposals=props
            ),
            timeout=5,
        )


async def cluster_id_of(sc: Sidecar) -> int:
    async with grpc.aio.insecure_channel(sc.address) as ch:
        resp = await pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest(), timeout=2)
        return int(resp.header.cluster_id)


async def test_store_scoped_policies_run_in_each_sidecar_and_propose_to_the_holder(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, skewed: Sidecar, policies: Path
) -> None:
    """The pd-leader holds the scheduler role. Every leader sits in sidecar 0 (stores 1
    and 4): a trapping store-scoped policy fails there only, with Warning events, while
    the other sidecars keep running it; a balancing one run over each sidecar's own
    regions moves the leaders through the holder."""
    fleet, pol = fleet_on, Policies(kube, pods, fleet_on)
    owner = pods.sidecars[0]  # store i heartbeats to sidecar i % 3: stores 1 and 4
    assert set(distribution(fleet)["leaders"]) == {1, 2, 3, 4}
    assert sum(n for sid, n in distribution(fleet)["leaders"].items() if sid in (1, 4)) == 60

    await pol.create(
        "trap-local",
        {"inline": b64(TRAP_WHEN_LEADING.encode())},
        scope="store",
        failureStrategy="Disable",
    )

    def trapped_in_owner_only(s: Obj) -> bool:
        e = store_entries(s)
        others = [e.get(sc.pod, {}) for sc in pods.sidecars[1:]]
        return e.get(owner.pod, {}).get("phase") == "Disabled" and all(
            o.get("phase") == "Running" and o.get("runs", 0) >= 3 for o in others
        )

    st = await pol.until("trap-local", trapped_in_owner_only)
    mine = store_entries(st)[owner.pod]
    assert mine["lastError"].startswith("trap") and sorted(mine["storeIds"]) == [1, 4]
    assert st["phase"] == "Disabled" and owner.pod in st["lastError"]
    assert ready(st)["status"] == "False"
    runs = {sc.pod: store_entries(st)[sc.pod]["runs"] for sc in pods.sidecars}
    await run_fleet(fleet, 3.0)
    st = await pol.status("trap-local")
    assert store_entries(st)[owner.pod]["runs"] == runs[owner.pod]  # disabled there
    assert all(store_entries(st)[sc.pod]["runs"] > runs[sc.pod] for sc in pods.sidecars[1:])
    deadline = time.monotonic() + 20
    while True:
        warned = await warnings_on(kube, pods.namespace, "trap-local")
        reasons = {e["reason"] for e in warned}
        if {"PolicyTrapped", "PolicyDisabled"} <= reasons:
            break
        assert time.monotonic() < deadline, warned
        await run_fleet(fleet, 0.5)
    assert all(owner.pod in e["message"] for e in warned), warned
    assert all(e["involvedObject"]["kind"] == "SchedulingPolicy" for e in warned)

    # A balancer over each sidecar's own regions; the holder admits what it proposes.
    balance = (policies / "balance_leader.wasm").read_bytes()
    await pol.create(
        "balance", {"inline": b64(balance)}, scope="store", config={"batch": 4, "tolerance": 1}
    )
    await balanced_within(fleet, 4, 90, lambda: pol.status("balance"))
    st = await pol.until(
        "balance", lambda s: s.get("phase") == "Running" and s.get("proposalsAccepted", 0) >= 20
    )
    entries = store_entries(st)
    assert set(entries) == {sc.pod for sc in pods.sidecars}, entries
    assert entries[owner.pod]["proposalsAccepted"] >= 10, entries
    assert st["proposalsAccepted"] == sum(e["proposalsAccepted"] for e in entries.values())
    assert st["moduleDigest"] == f"sha256:{sha(balance)}"
    # The holder made the operators (the fenced path); the holder tallied them.
    assert operators_by(skewed.status_port, "balance") >= 20

    # Deleted: nothing moves the leaders back any more.
    await deleted_stops_balancing(kube, pol, fleet, skewed.status_port)


async def test_propose_is_arbitrated_by_the_holder_only(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, skewed: Sidecar
) -> None:
    """Proposals sent by hand: the holder admits a valid one and says why it refuses the
    others; a sidecar that does not hold the role refuses the call."""
    fleet = fleet_on
    cid = await cluster_id_of(skewed)
    regions = http_json(skewed.status_port, "/regions")["regions"]
    r = next(x for x in regions if x["leader"]["store_id"] == 4)
    voters = [p["store_id"] for p in r["peers"] if p["store_id"] != 4]
    absent = next(s for s in (1, 2, 3) if s not in [p["store_id"] for p in r["peers"]])
    ep = r["epoch"]

    def transfer(target: int, conf_ver: int = ep["conf_ver"], version: int = ep["version"]) -> Any:
        return kubepdpb_pb2.Proposal(
            kind=1,
            region_id=r["id"],
            conf_ver=conf_ver,
            version=version,
            target_store=target,
            reason="test",
        )

    resp = await propose(
        skewed,
        cid,
        4,
        transfer(voters[0], version=ep["version"] + 7),  # a stale epoch
        transfer(absent),  # holds no voter of the region
        kubepdpb_pb2.Proposal(kind=9, region_id=r["id"]),  # not a kind at all
        transfer(voters[0]),  # fine
    )
    verdicts = [(v.accepted, v.reason) for v in resp.verdicts]
    assert len(verdicts) == 4, verdicts
    assert not verdicts[0][0] and "epoch changed" in verdicts[0][1], verdicts
    assert not verdicts[1][0] and "holds no voter" in verdicts[1][1], verdicts
    assert not verdicts[2][0] and "unknown proposal kind" in verdicts[2][1], verdicts
    assert verdicts[3] == (True, ""), verdicts
    # A store proposes only for the regions it leads.
    resp = await propose(skewed, cid, 2, transfer(voters[0]))
    assert not resp.verdicts[0].accepted and "not led by store 2" in resp.verdicts[0].reason
    deadline = time.monotonic() + 20
    while not any(
        x["id"] == r["id"] and x["leader"]["store_id"] == voters[0]
        for x in http_json(skewed.status_port, "/regions")["regions"]
    ):
        assert time.monotonic() < deadline, "the accepted transfer never happened"
        await run_fleet(fleet, 0.5)
    assert operators_by(skewed.status_port, "by-hand") == 1

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await propose(skewed, cid + 1, 4, transfer(voters[0]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cluster id" in (err.value.details() or "")
    other = next(sc for sc in pods.sidecars if sc is not skewed)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await propose(other, cid, 4, transfer(voters[0]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not the scheduler role's holder" in (err.value.details() or "")


async def test_store_scoped_proposals_go_to_the_scheduler_host(
    pods: Pods, kube: KubeClient, fleet_on: Fleet, skewed: Sidecar, policies: Path, tmp_path: Path
) -> None:
    """With the operator's scheduler host holding the role, the sidecars find it from the
    Lease (its identity carries its gRPC URL) and it admits their proposals; the
    pd-leader, no longer the holder, refuses Propose."""
    fleet, pol = fleet_on, Policies(kube, pods, fleet_on)
    await create_tikv_cluster(kube, pods.namespace, pods.name)
    port, grpc_port = free_port(), free_port()
    host = start_host(
        pods, "operator-a", tmp_path / "host.log", port, "--grpc-addr", f"127.0.0.1:{grpc_port}"
    )
    try:
        await wait_holder(kube, pods, fleet, f"operator-a@http://127.0.0.1:{grpc_port}")
        await host_without_balancers(fleet, port)
        skew(fleet, 3)
        await run_fleet(fleet, 2.0)
        assert max(leaders(fleet)) >= 40, leaders(fleet)
        balance = (policies / "balance_leader.wasm").read_bytes()
        await pol.create(
            "balance", {"inline": b64(balance)}, scope="store", config={"batch": 4, "tolerance": 1}
        )
        await balanced_within(fleet, 4, 90, lambda: pol.status("balance"))
        st = await pol.until("balance", lambda s: s.get("proposalsAccepted", 0) >= 20)
        assert operators_by(port, "balance") >= 20, st
        assert operators_by(skewed.status_port, "balance") == 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await propose(skewed, await cluster_id_of(skewed), 4)
        assert "not the scheduler role's holder" in (err.value.details() or "")
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
