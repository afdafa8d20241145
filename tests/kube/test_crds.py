"""The CRDs on the real API server: valid objects accepted, invalid ones rejected with a
message that says what is wrong, printer columns served."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from pdcore.adapters.kube.client import Invalid, KubeClient, crd_path
from tests.kube.conftest import kubectl
from tests.support.kubecluster import KubeCluster, binary

B64_WASM = "AGFzbQEAAAA="


def obj(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "kubepd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


VALID = [
    (
        "tikvclusters",
        obj(
            "TiKVCluster",
            {
                "replicas": 3,
                "image": "tikv:v8.5.0",
                "replication": {"maxReplicas": 3, "locationLabels": ["zone"]},
            },
        ),
    ),
    ("tikvstores", obj("TiKVStore", {"cluster": "c", "storeID": 1, "address": "tikv-0:20160"})),
    (
        "placementrules",
        obj(
            "PlacementRule",
            {
                "cluster": "c",
                "role": "voter",
                "count": 3,
                "labelConstraints": [{"key": "zone", "op": "in", "values": ["a"]}],
            },
        ),
    ),
    (
        "regionoperators",
        obj("RegionOperator", {"cluster": "c", "transferLeader": {"regionID": 2, "toStore": 3}}),
    ),
    (
        "schedulingpolicies",
        obj("SchedulingPolicy", {"cluster": "c", "module": {"inline": B64_WASM}}),
    ),
    ("pdmetas", obj("PDMeta", {"clusterID": "7", "idMark": "1000", "tsoWindow": "0"})),
]

INVALID = [
    (
        "tikvclusters",
        obj("TiKVCluster", {"replicas": 2, "image": "t", "replication": {"maxReplicas": 3}}),
        "replicas must be at least replication.maxReplicas",
    ),
    ("tikvclusters", obj("TiKVCluster", {"replicas": 0, "image": "t"}), "spec.replicas"),
    (
        "tikvclusters",
        obj(
            "TiKVCluster",
            {
                "replicas": 3,
                "image": "t",
                "replication": {"locationLabels": ["zone"], "isolationLevel": "rack"},
            },
        ),
        "isolationLevel must be one of locationLabels",
    ),
    (
        "tikvstores",
        obj("TiKVStore", {"cluster": "c", "storeID": 1, "address": "no-port"}),
        "spec.address",
    ),
    (
        "placementrules",
        obj("PlacementRule", {"cluster": "c", "role": "boss", "count": 3}),
        "spec.role",
    ),
    (
        "placementrules",
        obj(
            "PlacementRule",
            {"cluster": "c", "role": "voter", "count": 1, "startKey": "7a", "endKey": "61"},
        ),
        "startKey must be below endKey",
    ),
    (
        "placementrules",
        obj(
            "PlacementRule",
            {
                "cluster": "c",
                "role": "voter",
                "count": 1,
                "labelConstraints": [{"key": "zone", "op": "in"}],
            },
        ),
        "in and notIn need values",
    ),
    (
        "regionoperators",
        obj(
            "RegionOperator",
            {
                "cluster": "c",
                "transferLeader": {"regionID": 1, "toStore": 2},
                "addPeer": {"regionID": 1, "store": 3},
            },
        ),
        "set exactly one of",
    ),
    (
        "regionoperators",
        obj(
            "RegionOperator", {"cluster": "c", "merge": {"sourceRegionID": 4, "targetRegionID": 4}}
        ),
        "cannot merge into itself",
    ),
    (
        "regionoperators",
        obj("RegionOperator", {"cluster": "c", "split": {"regionID": 4, "policy": "usekey"}}),
        "policy usekey needs keys",
    ),
    (
        "schedulingpolicies",
        obj("SchedulingPolicy", {"cluster": "c", "module": {"url": "https://x/p.wasm"}}),
        "needs its sha256",
    ),
    (
        "schedulingpolicies",
        obj("SchedulingPolicy", {"cluster": "c", "module": {}}),
        "exactly one of inline",
    ),
]


@pytest.mark.parametrize(("plural", "body"), VALID, ids=[v[0] for v in VALID])
async def test_valid_objects_are_accepted(
    kube: KubeClient, namespace: str, plural: str, body: dict[str, Any]
) -> None:
    created = await kube.create(crd_path(namespace, plural), body)
    assert created["metadata"]["name"] == "x"


@pytest.mark.parametrize(
    ("plural", "body", "message"), INVALID, ids=[f"{v[0]}-{i}" for i, v in enumerate(INVALID)]
)
async def test_invalid_objects_are_rejected_with_a_clear_message(
    kube: KubeClient, namespace: str, plural: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(Invalid) as e:
        await kube.create(crd_path(namespace, plural), body)
    assert message in e.value.message
    assert await kube.list(crd_path(namespace, plural)) == []


async def test_immutable_fields(kube: KubeClient, namespace: str) -> None:
    path = crd_path(namespace, "pdmetas")
    o = await kube.create(
        path, obj("PDMeta", {"clusterID": "7", "idMark": "1000", "tsoWindow": "5"})
    )
    o["spec"]["idMark"] = "999"
    with pytest.raises(Invalid, match="idMark never goes back"):
        await kube.replace(f"{path}/x", o)
    o["spec"]["idMark"], o["spec"]["clusterID"] = "2000", "8"
    with pytest.raises(Invalid, match="clusterID is immutable"):
        await kube.replace(f"{path}/x", o)


def test_printer_columns_and_short_names(kube_cluster: KubeCluster) -> None:
    kubectl(kube_cluster, "create", "namespace", "cols", check=False)
    manifest = (
        "apiVersion: kubepd.io/v1alpha1\nkind: TiKVCluster\n"
        "metadata: {name: demo, namespace: cols}\n"
        "spec: {replicas: 3, image: tikv}\n"
    )
    subprocess.run(
        [str(binary("kubectl")), f"--kubeconfig={kube_cluster.kubeconfig}", "apply", "-f", "-"],
        input=manifest,
        text=True,
        check=True,
        capture_output=True,
    )
    out = kubectl(kube_cluster, "get", "tkc", "-n", "cols", "-o", "wide").stdout
    header = out.splitlines()[0].split()
    assert (
        header[:5] == ["NAME", "PHASE", "READY", "REPLICAS", "STORES-UP"] and "PD-LEADER" in header
    )
    assert kubectl(kube_cluster, "get", "kubepd", "-n", "cols").returncode == 0  # the category
