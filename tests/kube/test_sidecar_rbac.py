"""The sidecars work with exactly the permissions deploy/rbac.yaml grants them (the
`kubepd-sidecar` ClusterRole, bound by the operator to the cluster's ServiceAccount in
its namespace), with a token the API server issues, and stop with a clear error
without them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pd_operator import resources

from pdcore.adapters.kube.client import KubeClient
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.kube.conftest import ROOT, kubectl
from tests.support.kubecluster import KubeCluster, binary
from tests.support.ports import free_port
from tests.support.sidecars import Pods, Sidecar, create_tikv_cluster, fleet_for, run_fleet

pytestmark = pytest.mark.timeout(300)


def sidecar_cluster_role() -> dict[str, object]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text())
    return next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kubepd-sidecar"
    )


async def test_sidecars_run_with_the_sidecar_role_only(
    kube_cluster: KubeCluster, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    kubectl(kube_cluster, "apply", "-f", "-", input=json.dumps(sidecar_cluster_role()))
    # The identity the operator gives a cluster's pods, owned by a real TiKVCluster.
    cluster = await create_tikv_cluster(kube, namespace, "rbac")
    account = resources.service_account(cluster)
    binding = resources.sidecar_role_binding(cluster)
    await kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", account)
    bindings = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    await kube.create(bindings, binding)
    token = kubectl(
        kube_cluster, "-n", namespace, "create", "token", account["metadata"]["name"]
    ).stdout.strip()
    cfg = json.loads(kube_cluster.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": token}
    sa_kubeconfig = tmp_path / "sidecar-kubeconfig"
    sa_kubeconfig.write_text(json.dumps(cfg))

    pods = Pods(kube_cluster, namespace, "rbac", tmp_path, kubeconfig=sa_kubeconfig)
    try:
        pods.spawn(3)
        fleet: Fleet = await fleet_for(pods, kube)
        try:
            # Bootstrap, stores, leases, store announcements and scheduling through the
            # fenced step path: a fourth store fills up.
            await fleet.bootstrap(zones(3), round_robin(30, 3), size_mib=16)
            new = await fleet.add_store({"zone": "z4", "host": "h4"})
            deadline = time.monotonic() + 90
            while sum(1 for r in fleet.regions.values() if r.peer_on(new)) < 15:
                assert time.monotonic() < deadline, "no scheduling with the sidecar role"
                await run_fleet(fleet, 1.0)
        finally:
            await fleet.close()
        logs = " ".join(sc.log.read_text() for sc in pods.sidecars)
        assert "forbidden" not in logs.lower()

        # Without the binding the same identity is refused, and says why.
        await kube.delete(f"{bindings}/{binding['metadata']['name']}")
        lone = Sidecar("rbac-9", free_port(), free_port(), tmp_path / "rbac-9.log")
        alone = Pods(kube_cluster, namespace, "other", tmp_path, [lone], sa_kubeconfig)
        alone.start(lone)
        assert lone.proc is not None
        code = await asyncio.to_thread(lone.proc.wait, 30)
        text = lone.log.read_text()
        assert code == 2, text[-2000:]
        assert "forbidden" in text.lower() and "kubepd-sidecar" in text
    finally:
        for sc in pods.sidecars:
            pods.kill9(sc)


def test_the_chart_grants_the_sidecars_the_same_role(kube_cluster: KubeCluster) -> None:
    rendered = subprocess.run(
        [str(binary("helm")), "template", "kp", str(ROOT / "charts" / "kubepd")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    roles = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kp-kubepd-sidecar"
    ]
    assert len(roles) == 1
    assert roles[0]["rules"] == sidecar_cluster_role()["rules"]
