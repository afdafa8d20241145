"""Scale-in end to end: the kopf operator, four PD sidecars as the pods of the
StatefulSet, and the simulator as TiKV holding real regions. Lowering replicas drains
the highest ordinal's store (every region keeps its replicas throughout), PD makes it
Tombstone, and only then does the StatefulSet shrink and the volume go; a drain that
would leave too few stores is reported and never forced."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import KubeClient
from pdsim.cases import round_robin, zones
from tests.support.kubecluster import KubeCluster
from tests.support.operator_run import apply, get
from tests.support.sidecars import Pods, fleet_for, run_fleet

pytestmark = pytest.mark.timeout(300)

CLUSTER = """apiVersion: kubepd.io/v1alpha1
kind: TiKVCluster
metadata: {name: lc}
spec:
  replicas: %d
  image: pingcap/tikv:v8.5.0
"""


async def tikvcluster(kube: KubeClient, ns: str) -> dict[str, object]:
    return await kube.get(kinds.TIKV_CLUSTERS.path(ns, "lc"))


def condition(obj: dict[str, object], type_: str) -> dict[str, str]:
    conds = obj.get("status", {}).get("conditions", [])  # type: ignore[attr-defined]
    return next((c for c in conds if c["type"] == type_), {})


async def test_scale_in_drains_then_removes_and_never_forces(
    kube_cluster: KubeCluster, operator: str, kube: KubeClient, tmp_path: Path
) -> None:
    ns = operator
    apply(kube_cluster, ns, CLUSTER % 4)
    pods = Pods(kube_cluster, ns, "lc", tmp_path)
    try:
        pods.spawn(4)
        fleet = await fleet_for(pods, kube)
        await fleet.bootstrap(zones(4), round_robin(40, 4), size_mib=16)
        victim = sorted(fleet.stores)[3]  # store i talks to pod lc-i
        deadline = time.monotonic() + 30
        while len([o for o in (await kube.list_objects(kinds.TIKV_STORES.path(ns))).items
                   if o.get("status", {}).get("sidecar")]) < 4:  # fmt: skip
            assert time.monotonic() < deadline, "stores never announced their pods"
            await run_fleet(fleet, 0.3)

        apply(kube_cluster, ns, CLUSTER % 3)
        fewest = 3
        deadline = time.monotonic() + 150
        while get(kube_cluster, ns, "statefulset", "lc", "-o", "jsonpath={.spec.replicas}") != "3":
            assert time.monotonic() < deadline, (await tikvcluster(kube, ns)).get("status")
            await run_fleet(fleet, 1.0)
            fewest = min(fewest, *(len(r.peers) for r in fleet.regions.values()))
            if any(r.peer_on(victim) for r in fleet.regions.values()):
                # Not yet drained: the pod must still be there.
                assert get(kube_cluster, ns, "pod", "lc-3", "--ignore-not-found", "-o", "name")
        assert fewest >= 3, "a region lost a replica during the drain"
        assert not any(r.peer_on(victim) for r in fleet.regions.values())
        store = await kube.get(kinds.TIKV_STORES.path(ns, f"lc-store-{victim}"))
        assert store["status"]["state"] == "Tombstone"
        events = get(kube_cluster, ns, "events", "--field-selector", "involvedObject.name=lc")
        assert "Draining" in events and "ScaledIn" in events, events
        # The volume goes once the pod has (kube-controller-manager's PVC protection).
        deadline = time.monotonic() + 60
        while get(kube_cluster, ns, "pvc", "data-lc-3", "--ignore-not-found", "-o", "name"):
            assert time.monotonic() < deadline, (
                "the volume of the removed store stayed: "
                + get(kube_cluster, ns, "pvc", "data-lc-3", "-o", "yaml")
                + get(kube_cluster, ns, "pods", "-o", "name")
                + events
            )
            await run_fleet(fleet, 1.0)
        assert get(kube_cluster, ns, "pvc", "data-lc-0", "-o", "name")  # the others stay

        # Three stores left and max-replicas 3: a further scale-in cannot drain.
        apply(kube_cluster, ns, CLUSTER % 2)
        deadline = time.monotonic() + 60
        while condition(await tikvcluster(kube, ns), "ScaleIn").get("reason") != "DrainBlocked":
            assert time.monotonic() < deadline, (await tikvcluster(kube, ns)).get("status")
            await run_fleet(fleet, 1.0)
        blocked = condition(await tikvcluster(kube, ns), "ScaleIn")
        assert blocked["status"] == "False" and "fewer than max-replicas" in blocked["message"]
        await run_fleet(fleet, 3.0)
        assert get(kube_cluster, ns, "statefulset", "lc", "-o", "jsonpath={.spec.replicas}") == "3"
        assert all(len(r.peers) >= 3 for r in fleet.regions.values())
        await fleet.close()
    finally:
        for sc in pods.sidecars:
            pods.kill9(sc)


REPLACING = """apiVersion: kubepd.io/v1alpha1
kind: TiKVCluster
metadata: {name: rp}
spec:
  replicas: 4
  image: pingcap/tikv:v8.5.0
  schedule: {max-store-down-time-s: 3}
"""


async def test_a_dead_store_is_rebuilt_elsewhere_and_its_pod_replaced(
    kube_cluster: KubeCluster, operator: str, kube: KubeClient, tmp_path: Path
) -> None:
    ns = operator
    apply(kube_cluster, ns, REPLACING)
    pods = Pods(kube_cluster, ns, "rp", tmp_path)
    try:
        pods.spawn(4)
        fleet = await fleet_for(pods, kube)
        await fleet.bootstrap(zones(4), round_robin(40, 4), size_mib=16)
        dead = sorted(fleet.stores)[3]
        deadline = time.monotonic() + 30
        while not get(kube_cluster, ns, "pod", "rp-3", "--ignore-not-found", "-o", "name") or len(
            [o for o in (await kube.list_objects(kinds.TIKV_STORES.path(ns))).items
             if o.get("status", {}).get("sidecar")]
        ) < 4:  # fmt: skip
            assert time.monotonic() < deadline, "pods or store announcements missing"
            await run_fleet(fleet, 0.3)
        uid = get(kube_cluster, ns, "pod", "rp-3", "-o", "jsonpath={.metadata.uid}")

        # The pod's TiKV and its sidecar die and stay dead.
        pods.kill9(pods.sidecars[3])
        fleet.stop_store(dead)
        deadline = time.monotonic() + 150
        while get(kube_cluster, ns, "pod", "rp-3", "--ignore-not-found", "-o",
                  "jsonpath={.metadata.uid}") in (uid, ""):  # fmt: skip
            status = (await kube.get(kinds.TIKV_CLUSTERS.path(ns, "rp"))).get("status", {})
            left = [r.id for r in fleet.regions.values() if r.peer_on(dead)]
            assert time.monotonic() < deadline, (status.get("scheduling"), left, fleet.stats)
            await run_fleet(fleet, 1.0)
            assert all(len(r.peers) >= 3 for r in fleet.regions.values())
        store = await kube.get(kinds.TIKV_STORES.path(ns, f"rp-store-{dead}"))
        assert store["status"]["state"] == "Tombstone"
        assert not any(r.peer_on(dead) for r in fleet.regions.values())
        assert all(len(r.peers) == 3 for r in fleet.regions.values())
        events = get(kube_cluster, ns, "events", "--field-selector", "involvedObject.name=rp")
        assert "ReplacingStore" in events and "StoreReplaced" in events, events
        await fleet.close()
    finally:
        for sc in pods.sidecars:
            pods.kill9(sc)
