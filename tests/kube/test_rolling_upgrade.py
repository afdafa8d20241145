"""Rolling upgrade end to end: the kopf operator, three PD sidecars as the pods and the
simulator as TiKV. A new image rolls one pod at a time from the highest ordinal, and
every pod's store has no leader left when its pod is restarted. The test plays the
kubelet: it restarts the pod's sidecar and marks the new pod Ready."""

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
metadata: {name: up}
spec:
  replicas: 3
  image: pingcap/tikv:%s
  leaderEvictionTimeoutSeconds: 60
"""


async def pods_by_name(kube: KubeClient, ns: str) -> dict[str, dict[str, object]]:
    items = (
        await kube.list_objects(
            f"/api/v1/namespaces/{ns}/pods", label_selector="app.kubernetes.io/instance=up"
        )
    ).items
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


async def mark_ready(kube: KubeClient, ns: str, pod: str) -> None:
    await kube.patch(
        f"/api/v1/namespaces/{ns}/pods/{pod}/status",
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    )


async def test_rolling_upgrade_evicts_leaders_before_each_pod(
    kube_cluster: KubeCluster, operator: str, kube: KubeClient, tmp_path: Path
) -> None:
    ns = operator
    apply(kube_cluster, ns, CLUSTER % "v8.5.0")
    pods = Pods(kube_cluster, ns, "up", tmp_path)
    try:
        pods.spawn(3)
        fleet = await fleet_for(pods, kube)
        await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
        store_of = {f"up-{i}": sid for i, sid in enumerate(sorted(fleet.stores))}
        deadline = time.monotonic() + 30
        while len(await pods_by_name(kube, ns)) < 3:
            assert time.monotonic() < deadline, "the StatefulSet made no pods"
            await run_fleet(fleet, 0.3)
        uids = {}
        for name, pod in (await pods_by_name(kube, ns)).items():
            await mark_ready(kube, ns, name)
            uids[name] = pod["metadata"]["uid"]  # type: ignore[index]
        await run_fleet(fleet, 2.0)

        apply(kube_cluster, ns, CLUSTER % "v8.5.1")
        restarted: list[str] = []
        leaders_at_restart: dict[str, int] = {}
        deadline = time.monotonic() + 100
        while len(restarted) < 3 or not await upgraded(kube, ns):
            assert time.monotonic() < deadline, (restarted, await cluster_status(kube, ns))
            await run_fleet(fleet, 0.5)
            now = await pods_by_name(kube, ns)
            for name, uid in list(uids.items()):
                pod = now.get(name)
                if pod is not None and pod["metadata"]["uid"] == uid:  # type: ignore[index]
                    continue
                if name not in leaders_at_restart:  # the pod is going: count its leaders
                    sid = store_of[name]
                    leaders_at_restart[name] = sum(
                        1 for r in fleet.regions.values() if r.leader_store == sid
                    )
                    restarted.append(name)
                if pod is None:
                    continue
                # The new pod is there: "start" it — its sidecar restarts, it becomes Ready.
                sc = next(s for s in pods.sidecars if s.pod == name)
                pods.kill9(sc)
                pods.start(sc)
                await mark_ready(kube, ns, name)
                uids[name] = pod["metadata"]["uid"]  # type: ignore[index]
        assert restarted == ["up-2", "up-1", "up-0"], restarted
        assert leaders_at_restart == {"up-2": 0, "up-1": 0, "up-0": 0}, (
            leaders_at_restart,
            get(kube_cluster, ns, "events", "--sort-by=.lastTimestamp"),
        )
        assert all(len(r.peers) >= 3 for r in fleet.regions.values())
        stores = (await kube.list_objects(kinds.TIKV_STORES.path(ns))).items
        assert not any(s["spec"].get("evictLeaders") for s in stores), "an eviction stayed on"
        await fleet.close()
    finally:
        for sc in pods.sidecars:
            pods.kill9(sc)


async def cluster_status(kube: KubeClient, ns: str) -> object:
    return (await kube.get(kinds.TIKV_CLUSTERS.path(ns, "up"))).get("status")


async def upgraded(kube: KubeClient, ns: str) -> bool:
    status = await cluster_status(kube, ns)
    conds = status.get("conditions", []) if isinstance(status, dict) else []
    return any(c["type"] == "Upgrade" and c["reason"] == "Done" for c in conds)
