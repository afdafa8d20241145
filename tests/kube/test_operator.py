"""The kopf operator against the real API server (with kube-controller-manager): a
TiKVCluster becomes its owned objects, spec changes reconcile, status and events show
what happened, and deleting the cluster garbage-collects everything."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner

from tests.kube.conftest import kubectl
from tests.support.kubecluster import KubeCluster

pytestmark = pytest.mark.timeout(240)


def wait(fn: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def get(cluster: KubeCluster, ns: str, *args: str) -> str:
    return kubectl(cluster, "-n", ns, "get", *args).stdout


@pytest.fixture
def operator(kube_cluster: KubeCluster) -> Iterator[str]:
    ns = f"op{int(time.time() * 1000) % 100000}"
    kubectl(kube_cluster, "create", "namespace", ns)
    os.environ["KUBECONFIG"] = str(kube_cluster.kubeconfig)
    with KopfRunner(
        ["run", "--standalone", "-n", ns, "-m", "pd_operator.handlers"], timeout=30
    ) as runner:
        yield ns
    assert runner.exception is None, runner.output[-3000:]


def apply(cluster: KubeCluster, ns: str, manifest: str) -> None:
    import subprocess

    from tests.support.kubecluster import binary

    subprocess.run(
        [
            str(binary("kubectl")),
            f"--kubeconfig={cluster.kubeconfig}",
            "-n",
            ns,
            "apply",
            "-f",
            "-",
        ],
        input=manifest,
        text=True,
        check=True,
        capture_output=True,
    )


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
