"""The kopf operator against the real API server (with kube-controller-manager): a
TiKVCluster becomes its owned objects, spec changes reconcile, status and events show
what happened, and deleting the cluster garbage-collects everything."""

from __future__ import annotations

import pytest

from tests.kube.conftest import kubectl
from tests.support.kubecluster import KubeCluster
from tests.support.operator_run import apply, get, wait

pytestmark = pytest.mark.timeout(240)


CLUSTER = """apiVersion: kubepd.io/v1alpha1
kind: TiKVCluster
metadata: {name: basic}
spec:
  replicas: %d
  image: pingcap/tikv:v8.5.0
  replication: {maxReplicas: 3, locationLabels: [zone]}
"""


def test_cluster_becomes_owned_objects_and_reconciles(
    kube_cluster: KubeCluster, operator: str
) -> None:
    ns = operator
    apply(kube_cluster, ns, CLUSTER % 3)
    wait(
        lambda: (
            get(kube_cluster, ns, "statefulset", "basic", "-o", "jsonpath={.spec.replicas}") == "3"
        ),
        what="the StatefulSet",
    )
    for kind, name in [
        ("service", "basic-peer"),
        ("service", "basic-pd"),
        ("pdb", "basic"),
        ("configmap", "basic-config"),
        ("serviceaccount", "basic-kubepd"),
        ("rolebinding", "basic-kubepd"),
    ]:
        owner = get(
            kube_cluster, ns, kind, name, "-o", "jsonpath={.metadata.ownerReferences[0].kind}"
        )
        assert owner == "TiKVCluster", (kind, name)
    containers = get(
        kube_cluster,
        ns,
        "statefulset",
        "basic",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    )
    assert containers.split() == ["tikv", "kubepd"]
    account = "{.spec.template.spec.serviceAccountName}"
    assert get(kube_cluster, ns, "statefulset", "basic", "-o", f"jsonpath={account}") == (
        "basic-kubepd"
    )
    role = get(kube_cluster, ns, "rolebinding", "basic-kubepd", "-o", "jsonpath={.roleRef.name}")
    assert role == "kubepd-sidecar"
    # The operator holds the cluster's scheduler role (a daemon per TiKVCluster).
    holder = wait(
        lambda: get(
            kube_cluster,
            ns,
            "lease",
            "basic-scheduler",
            "--ignore-not-found",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ),
        what="the scheduler Lease",
    )
    assert holder.startswith("operator-"), holder
    # kube-controller-manager turns the StatefulSet into pods (no kubelet: they stay Pending).
    wait(lambda: len(get(kube_cluster, ns, "pods", "-o", "name").split()) == 3, what="3 pods")
    apply(kube_cluster, ns, CLUSTER % 4)
    wait(
        lambda: (
            get(kube_cluster, ns, "statefulset", "basic", "-o", "jsonpath={.spec.replicas}") == "4"
        ),
        what="scale to 4",
    )
    status = wait(
        lambda: get(kube_cluster, ns, "tikvcluster", "basic", "-o", "jsonpath={.status.phase}"),
        what="a phase",
    )
    assert status in {"Reconciling", "Progressing", "Scaling", "Running"}
    events = wait(
        lambda: get(kube_cluster, ns, "events", "--field-selector", "involvedObject.name=basic"),
        what="events",
    )
    assert "StatefulSet" in events
    kubectl(kube_cluster, "-n", ns, "delete", "tikvcluster", "basic", "--wait=false")
    wait(
        lambda: (
            "basic" not in get(kube_cluster, ns, "statefulset", "--ignore-not-found", "-o", "name")
        ),
        what="garbage collection of the StatefulSet",
        timeout=90,
    )


def test_invalid_cluster_is_rejected_with_a_clear_message(
    kube_cluster: KubeCluster, operator: str
) -> None:
    import subprocess

    from tests.support.kubecluster import binary

    bad = CLUSTER.replace("replicas: %d", "replicas: 2")
    out = subprocess.run(
        [
            str(binary("kubectl")),
            f"--kubeconfig={kube_cluster.kubeconfig}",
            "-n",
            operator,
            "apply",
            "-f",
            "-",
        ],
        input=bad,
        text=True,
        capture_output=True,
    )
    assert out.returncode != 0 and "replicas must be at least replication.maxReplicas" in out.stderr
