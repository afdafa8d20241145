"""The CRDs on the real API server: established, valid objects accepted, invalid ones
rejected with a 422 whose message says what is wrong, rules on updates enforced,
printer columns served, short names, the `kubepd` category and field selectors."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdcore.adapters.kube import convert
from pdcore.adapters.kube.client import Invalid, KubeClient, crd_path
from pdcore.domain.config import ReplicationConfig, ScheduleConfig
from tests.kube.conftest import kubectl
from tests.support.kubecluster import KubeCluster, binary

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
PLURALS = [
    "tikvclusters",
    "tikvstores",
    "placementrules",
    "regionoperators",
    "schedulingpolicies",
    "pdmetas",
    "keyspaces",
]
B64_WASM = "AGFzbQEAAAA="
SHA = "ab" * 32


def obj(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "kubepd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def tkc(**spec: Any) -> dict[str, Any]:
    return obj("TiKVCluster", {"replicas": 3, "image": "pingcap/tikv:v8.5.0", **spec})


def tks(**spec: Any) -> dict[str, Any]:
    return obj("TiKVStore", {"cluster": "c", "storeID": 1, "address": "tikv-0:20160", **spec})


def rule(**spec: Any) -> dict[str, Any]:
    return obj("PlacementRule", {"cluster": "c", "role": "voter", "count": 3, **spec})


def rop(**spec: Any) -> dict[str, Any]:
    return obj("RegionOperator", {"cluster": "c", **spec})


def spol(**spec: Any) -> dict[str, Any]:
    return obj("SchedulingPolicy", {"cluster": "c", "module": {"inline": B64_WASM}, **spec})


def pdm(**spec: Any) -> dict[str, Any]:
    return obj("PDMeta", {"clusterID": "7", "idMark": "1000", "tsoWindow": "0", **spec})


def ks(**spec: Any) -> dict[str, Any]:
    return obj(
        "Keyspace", {"cluster": "c", "id": 1, "name": "tenant_a", "state": "ENABLED", **spec}
    )


VALID = [
    ("tikvclusters", tkc()),
    (
        "tikvclusters",
        tkc(
            version="v8.5.0",
            resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": 4}},
            storage={"size": "100Gi", "storageClassName": "fast"},
            scaleInPVCPolicy="Retain",
            sidecar={"leaseDurationSeconds": 5, "renewPeriodSeconds": 1},
            schedule={"leader-schedule-limit": 8, "low-space-ratio": 0.8, "halt-scheduling": False},
            replication={
                "maxReplicas": 3,
                "locationLabels": ["zone", "host"],
                "isolationLevel": "zone",
            },
        ),
    ),
    ("tikvstores", tks()),
    ("tikvstores", tks(address="[fd00::1]:20160", labels={"zone": "a"}, desiredState="Offline")),
    ("placementrules", rule()),
    (
        "placementrules",
        rule(
            groupID="tidb",
            id="t1-learners",
            index=2,
            override=True,
            startKey="7480",
            endKey="7481",
            role="learner",
            count=1,
            labelConstraints=[
                {"key": "engine", "op": "in", "values": ["tiflash"]},
                {"key": "disk", "op": "exists"},
            ],
            locationLabels=["zone"],
            isolationLevel="zone",
        ),
    ),
    ("placementrules", rule(role="leader", count=1, startKey="61", endKey="")),
    ("regionoperators", rop(transferLeader={"regionID": 2, "toStore": 3})),
    ("regionoperators", rop(addPeer={"regionID": 2, "store": 3, "role": "learner"})),
    ("regionoperators", rop(removePeer={"regionID": 2, "store": 3})),
    ("regionoperators", rop(merge={"sourceRegionID": 2, "targetRegionID": 4})),
    ("regionoperators", rop(split={"regionID": 2, "policy": "usekey", "keys": ["6162"]})),
    ("regionoperators", rop(scatter={"regionIDs": [2, 4, 6], "group": "import"})),
    ("schedulingpolicies", spol()),
    (
        "schedulingpolicies",
        spol(
            module={"url": "https://example.com/p.wasm", "sha256": SHA},
            config={"anything": {"nested": [1, 2]}},
            intervalSeconds=30,
            scope="store",
            priority=90,
            failureStrategy="Retry",
            limits={"fuel": 10_000, "memoryMiB": 16, "timeoutMillis": 200},
        ),
    ),
    ("schedulingpolicies", spol(module={"configMapRef": {"name": "pol", "key": "p.wasm"}})),
    ("pdmetas", pdm()),
    ("pdmetas", pdm(bootstrapped=True, clusterMeta={"id": 7}, globalConfig={"k": "00ff"})),
    ("pdmetas", pdm(keyspaceMark="3")),
    ("keyspaces", ks(config={"gc_management_type": "keyspace_level_gc"}, createdAt=1)),
    ("keyspaces", ks(id=0, name="DEFAULT", state="TOMBSTONE")),
]

INVALID = [
    # TiKVCluster
    (
        "tikvclusters",
        tkc(replicas=2, replication={"maxReplicas": 3}),
        "replicas must be at least replication.maxReplicas",
    ),
    ("tikvclusters", tkc(replicas=0), "spec.replicas: Invalid value: 0"),
    ("tikvclusters", obj("TiKVCluster", {"replicas": 3}), "spec.image: Required value"),
    ("tikvclusters", tkc(version="eight"), "spec.version"),
    ("tikvclusters", tkc(storage={"size": "ten gigs"}), "spec.storage.size"),
    ("tikvclusters", tkc(scaleInPVCPolicy="Shred"), 'supported values: "Delete", "Retain"'),
    (
        "tikvclusters",
        tkc(replication={"locationLabels": ["zone"], "isolationLevel": "rack"}),
        "isolationLevel must be one of locationLabels",
    ),
    (
        "tikvclusters",
        tkc(sidecar={"leaseDurationSeconds": 2, "renewPeriodSeconds": 2}),
        "renewPeriodSeconds must be shorter than leaseDurationSeconds",
    ),
    ("tikvclusters", tkc(schedule={"leader-schedule-limit": -1}), "leader-schedule-limit"),
    (
        "tikvclusters",
        tkc(schedule={"high-space-ratio": 0.9, "low-space-ratio": 0.8}),
        "high-space-ratio must be below low-space-ratio",
    ),
    ("tikvclusters", tkc(schedule={"leader-schedule-policy": "random"}), "leader-schedule-policy"),
    # TiKVStore
    ("tikvstores", tks(address="no-port"), "spec.address"),
    ("tikvstores", tks(storeID=0), "spec.storeID"),
    ("tikvstores", tks(desiredState="Tombstone"), 'supported values: "Up", "Offline"'),
    ("tikvstores", obj("TiKVStore", {"cluster": "c", "storeID": 1}), "spec.address: Required"),
    # PlacementRule
    ("placementrules", rule(role="boss"), "spec.role"),
    ("placementrules", rule(count=0), "spec.count"),
    ("placementrules", rule(startKey="7a", endKey="61"), "startKey must be below endKey"),
    ("placementrules", rule(startKey="XYZ"), "spec.startKey"),
    ("placementrules", rule(startKey="abc"), "spec.startKey"),  # odd length is not bytes
    (
        "placementrules",
        rule(labelConstraints=[{"key": "zone", "op": "in"}]),
        "in and notIn need values",
    ),
    (
        "placementrules",
        rule(labelConstraints=[{"key": "zone", "op": "exists", "values": ["a"]}]),
        "exists and notExists take none",
    ),
    ("placementrules", rule(labelConstraints=[{"key": "zone", "op": "near"}]), "op"),
    (
        "placementrules",
        rule(locationLabels=["zone"], isolationLevel="host"),
        "isolationLevel must be one of locationLabels",
    ),
    ("placementrules", rule(role="leader", count=3), "a leader rule has count 1"),
    # RegionOperator
    (
        "regionoperators",
        rop(transferLeader={"regionID": 1, "toStore": 2}, addPeer={"regionID": 1, "store": 3}),
        "set exactly one of",
    ),
    ("regionoperators", rop(), "set exactly one of"),
    (
        "regionoperators",
        rop(transferLeader={"regionID": 1}),
        "spec.transferLeader.toStore: Required",
    ),
    (
        "regionoperators",
        rop(merge={"sourceRegionID": 4, "targetRegionID": 4}),
        "a region cannot merge into itself",
    ),
    ("regionoperators", rop(split={"regionID": 4, "policy": "usekey"}), "policy usekey needs keys"),
    (
        "regionoperators",
        rop(split={"regionID": 4, "policy": "scan", "keys": ["61"]}),
        "keys are only used with policy usekey",
    ),
    ("regionoperators", rop(scatter={"regionIDs": []}), "spec.scatter.regionIDs"),
    ("regionoperators", rop(removePeer={"regionID": 0, "store": 1}), "spec.removePeer.regionID"),
    # SchedulingPolicy
    (
        "schedulingpolicies",
        spol(module={"url": "https://x/p.wasm"}),
        "a module fetched by url needs its sha256",
    ),
    ("schedulingpolicies", spol(module={}), "set exactly one of inline, configMapRef, url"),
    (
        "schedulingpolicies",
        spol(module={"inline": B64_WASM, "url": "https://x/p.wasm", "sha256": SHA}),
        "set exactly one of inline, configMapRef, url",
    ),
    ("schedulingpolicies", spol(module={"inline": "not base64!"}), "spec.module.inline"),
    ("schedulingpolicies", spol(scope="galaxy"), 'supported values: "cluster", "store"'),
    ("schedulingpolicies", spol(failureStrategy="Panic"), "spec.failureStrategy"),
    ("schedulingpolicies", spol(limits={"memoryMiB": 4096}), "spec.limits.memoryMiB"),
    (
        "schedulingpolicies",
        spol(intervalSeconds=1, limits={"timeoutMillis": 5000}),
        "limits.timeoutMillis must not exceed intervalSeconds",
    ),
    # PDMeta
    ("pdmetas", pdm(clusterID="-1"), "spec.clusterID"),
    ("pdmetas", pdm(idMark="ten"), "spec.idMark"),
    ("pdmetas", pdm(bootstrapped=True), "a bootstrapped cluster needs clusterMeta"),
    ("pdmetas", pdm(globalConfig={"k": "xyz"}), "spec.globalConfig"),
    ("pdmetas", pdm(keyspaceMark="-1"), "spec.keyspaceMark"),
    # Keyspace
    ("keyspaces", ks(id=1 << 24), "spec.id"),
    ("keyspaces", ks(name="no spaces"), "spec.name"),
    ("keyspaces", ks(state="GONE"), "spec.state"),
    ("keyspaces", ks(config={"k": 1}), "spec.config.k"),
]


async def test_crds_are_established_with_names_and_category(kube: KubeClient) -> None:
    for plural in PLURALS:
        crd = await kube.get(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.kubepd.io"
        )
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds.get("Established") == "True" and conds.get("NamesAccepted") == "True"
        names = crd["spec"]["names"]
        assert names["categories"] == ["kubepd"] and names["shortNames"]
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1alpha1" and version["additionalPrinterColumns"]
        if plural not in ("pdmetas", "keyspaces"):
            assert "status" in version.get("subresources", {})


@pytest.mark.parametrize(
    ("plural", "body"), VALID, ids=[f"{v[0]}-{i}" for i, v in enumerate(VALID)]
)
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
    assert e.value.status == 422
    assert message in e.value.message, e.value.message
    assert await kube.list(crd_path(namespace, plural)) == []


UPDATES = [
    ("pdmetas", pdm(tsoWindow="5"), {"idMark": "999"}, "idMark never goes back"),
    ("pdmetas", pdm(tsoWindow="5"), {"tsoWindow": "4"}, "tsoWindow never goes back"),
    ("pdmetas", pdm(), {"clusterID": "8"}, "clusterID is immutable once set"),
    (
        "pdmetas",
        pdm(bootstrapped=True, clusterMeta={"id": 7}),
        {"bootstrapped": False},
        "a bootstrapped cluster stays bootstrapped",
    ),
    ("pdmetas", pdm(keyspaceMark="5"), {"keyspaceMark": "4"}, "keyspaceMark never goes back"),
    ("keyspaces", ks(), {"name": "other"}, "a keyspace keeps its id and name"),
    ("keyspaces", ks(state="TOMBSTONE"), {"state": "ENABLED"}, "a TOMBSTONE keyspace stays"),
    ("tikvstores", tks(), {"storeID": 2}, "storeID is immutable"),
    ("tikvstores", tks(), {"cluster": "d"}, "cluster is immutable"),
    (
        "regionoperators",
        rop(transferLeader={"regionID": 2, "toStore": 3}),
        {"transferLeader": {"regionID": 2, "toStore": 4}},
        "a RegionOperator cannot be changed",
    ),
]


@pytest.mark.parametrize(
    ("plural", "body", "change", "message"), UPDATES, ids=[u[3] for u in UPDATES]
)
async def test_rules_on_updates(
    kube: KubeClient,
    namespace: str,
    plural: str,
    body: dict[str, Any],
    change: dict[str, Any],
    message: str,
) -> None:
    created = await kube.create(crd_path(namespace, plural), body)
    updated = copy.deepcopy(created)
    updated["spec"].update(change)
    with pytest.raises(Invalid) as e:
        await kube.replace(crd_path(namespace, plural, "x"), updated)
    assert message in e.value.message, e.value.message
    # Moving forward is fine.
    if plural == "pdmetas":
        created["spec"]["idMark"] = "2000"
        await kube.replace(crd_path(namespace, plural, "x"), created)


async def test_status_rules(kube: KubeClient, namespace: str) -> None:
    path = crd_path(namespace, "regionoperators")
    await kube.create(path, rop(transferLeader={"regionID": 2, "toStore": 3}))
    with pytest.raises(Invalid, match="stepsDone cannot exceed stepsTotal"):
        await kube.patch(f"{path}/x/status", {"status": {"stepsDone": 3, "stepsTotal": 2}})
    with pytest.raises(Invalid, match=r"status\.phase"):
        await kube.patch(f"{path}/x/status", {"status": {"phase": "Exploded"}})


# What `kubectl get` shows: (plural, object, status, {column: cell}) — health at a glance.
COLUMNS = [
    (
        "tikvclusters",
        tkc(version="v8.5.0"),
        {
            "phase": "Running",
            "readyReplicas": 3,
            "stores": {"up": 3, "offline": 0},
            "regions": 120,
            "leader": "tikv-0",
            "scheduling": {"holder": "operator", "operatorsInFlight": 2},
        },
        {
            "Phase": "Running",
            "Ready": 3,
            "Replicas": 3,
            "Stores-Up": 3,
            "Regions": 120,
            "PD-Leader": "tikv-0",
            "Operators": 2,
            "Scheduler": "operator",
        },
    ),
    (
        "tikvstores",
        tks(),
        {
            "state": "Up",
            "regionCount": 40,
            "leaderCount": 13,
            "capacity": "1Ti",
            "available": "512Gi",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
        {
            "Store": 1,
            "State": "Up",
            "Ready": "True",
            "Regions": 40,
            "Leaders": 13,
            "Available": "512Gi",
        },
    ),
    (
        "placementrules",
        rule(startKey="61"),
        {"conditions": [{"type": "Applied", "status": "True"}]},
        {
            "Cluster": "c",
            "Group": "pd",
            "Role": "voter",
            "Count": 3,
            "Start": "61",
            "Applied": "True",
        },
    ),
    (
        "regionoperators",
        rop(addPeer={"regionID": 2, "store": 3}),
        {
            "phase": "Running",
            "kind": "addPeer",
            "stepsDone": 1,
            "stepsTotal": 2,
            "operator": "add-peer {add learner peer 9 on store 3, promote learner peer 9}",
        },
        {"Phase": "Running", "Kind": "addPeer", "Done": 1, "Steps": 2},
    ),
    (
        "schedulingpolicies",
        spol(),
        {"phase": "Running", "runs": 10, "proposalsAccepted": 4, "proposalsRejected": 1},
        {"Scope": "cluster", "Phase": "Running", "Runs": 10, "Accepted": 4, "Rejected": 1},
    ),
    (
        "pdmetas",
        pdm(bootstrapped=True, clusterMeta={"id": 7}, gc={"safe_point": 42}),
        {"conditions": [{"type": "Bootstrapped", "status": "True"}]},
        {"Cluster-ID": "7", "Bootstrapped": True, "ID-Mark": "1000", "GC-Safe-Point": 42},
    ),
]


@pytest.mark.parametrize(
    ("plural", "body", "status", "cells"), COLUMNS, ids=[c[0] for c in COLUMNS]
)
async def test_printer_columns(
    kube: KubeClient,
    namespace: str,
    plural: str,
    body: dict[str, Any],
    status: dict[str, Any],
    cells: dict[str, Any],
) -> None:
    path = crd_path(namespace, plural)
    await kube.create(path, body)
    await kube.patch(f"{path}/x/status", {"status": status})
    table = await kube.table(f"{path}/x")
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[0] == "Name" and names[-1] == "Age"
    row = dict(zip(names, table["rows"][0]["cells"], strict=True))
    assert {k: row[k] for k in cells} == cells


def test_kubectl_get_wide_and_category(kube_cluster: KubeCluster) -> None:
    kubectl(kube_cluster, "create", "namespace", "cols", check=False)
    manifest = yaml.safe_dump_all(
        [
            {**tkc(), "metadata": {"name": "demo", "namespace": "cols"}},
            {**tks(), "metadata": {"name": "demo-store-1", "namespace": "cols"}},
        ]
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
    assert header[:5] == ["NAME", "PHASE", "READY", "REPLICAS", "STORES-UP"]
    assert {"PD-LEADER", "OPERATORS", "SCHEDULER"} <= set(header)
    narrow = kubectl(kube_cluster, "get", "tkc", "-n", "cols").stdout.splitlines()[0].split()
    assert "PD-LEADER" not in narrow  # priority-1 columns only with -o wide
    store_header = kubectl(kube_cluster, "get", "tks", "-n", "cols", "-o", "wide").stdout
    assert store_header.split()[:6] == ["NAME", "CLUSTER", "STORE", "ADDRESS", "STATE", "READY"]
    everything = kubectl(kube_cluster, "get", "kubepd", "-n", "cols").stdout
    assert "tikvcluster.kubepd.io/demo" in everything
    assert "tikvstore.kubepd.io/demo-store-1" in everything


async def test_objects_are_selectable_by_cluster(kube: KubeClient, namespace: str) -> None:
    path = crd_path(namespace, "placementrules")
    await kube.create(path, {**rule(), "metadata": {"name": "mine"}})
    await kube.create(path, {**rule(cluster="other"), "metadata": {"name": "theirs"}})
    mine = await kube.list(path, field_selector="spec.cluster=c")
    assert [o["metadata"]["name"] for o in mine] == ["mine"]


def _schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_schedule_schema_covers_every_pd_schedule_key() -> None:
    """The TiKVCluster schema names exactly the keys PD's config understands, so a typo
    is rejected by the API server instead of being ignored."""
    spec = _schema("tikvclusters")["properties"]["spec"]["properties"]
    keys = set(spec["schedule"]["properties"])
    assert keys == {f.name.replace("_", "-") for f in dataclasses.fields(ScheduleConfig)}
    repl = set(spec["replication"]["properties"])
    assert repl == set(convert.REPLICATION_KEYS)
    assert {k.replace("-", "_") for k in convert.REPLICATION_KEYS.values()} == {
        f.name for f in dataclasses.fields(ReplicationConfig)
    }
