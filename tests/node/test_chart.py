"""A user's path on a real node, through the user's own commands: `helm install` the chart,
`kubectl apply` a TiKVCluster, pods start and become Ready by their probes (the TiKV
container is the simulated stand-in, the sidecar is kubepd), the cluster bootstraps,
`kubectl get tikvclusters,tikvstores` shows the stores Up, a deleted pd-leader pod is
replaced and TSO goes on without going back, and `helm uninstall` removes the release.

The tests of this module run in order on one release and one TiKVCluster."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import ssl
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.support.node import Node

ROOT = Path(__file__).resolve().parents[2]
RELEASE, SYSTEM_NS, NS, CLUSTER = "kubepd", "kubepd-system", "tikv", "basic"
VERSION = "0.1.0"
SELECTOR = f"app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/name=tikv"
# The first test also builds what the session's node needs (cold: the images, minutes).
pytestmark = pytest.mark.timeout(1800)
# When `helm install` started: the benchmark "helm install → bootstrapped cluster".
HELM_INSTALLED: list[float] = []


def cluster_yaml(name: str, namespace: str, extra: str = "") -> str:
    """The suite's TiKVCluster: 3 pods of the stand-in TiKV image and the sidecar."""
    return f"""
apiVersion: kubepd.io/v1alpha1
kind: TiKVCluster
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 3
  image: kubepd-tikv-standin:{VERSION}
  pdImage: kubepd:{VERSION}
  storage: {{size: 1Gi, storageClassName: kubepd-node}}
  # Three replicas: the stand-ins send each other snapshots and leaders (pdsim.peers).
  replication: {{maxReplicas: 3}}
  # Leaders balanced to within a few (PD's default tolerance for leader counts is 5 on
  # each side, wide for 16 regions); snapshots not held back by PD's 15 a minute.
  schedule: {{tolerant-size-ratio: 0.5, store-limit-add-peer: 600, store-limit-remove-peer: 600}}
{extra}"""


CLUSTER_YAML = cluster_yaml(CLUSTER, NS, "  leaderEvictionTimeoutSeconds: 30\n")
REGIONS = 16  # the stand-in's --initial-regions: the bootstrapping store splits into 16


def wait_for(
    cond: Callable[[], Any],
    what: str,
    timeout: float = 120.0,
    interval: float = 1.0,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll `cond` until truthy; on timeout say what was last seen (and `detail()`)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    more = f"\n{detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r}){more}")


def get_json(node: Node, *args: str) -> Any:
    return json.loads(node.kubectl("get", *args, "-o", "json").stdout)


def tso(address: str, timeout: float = 2.0) -> int:
    """One timestamp from the PD at `address` (physical << 18 | logical)."""
    with grpc.insecure_channel(address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        members = stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=timeout)
        header = pdpb_pb2.RequestHeader(cluster_id=members.header.cluster_id)
        for resp in stub.Tso(iter([pdpb_pb2.TsoRequest(header=header, count=1)]), timeout=timeout):
            if resp.header.HasField("error"):
                raise RuntimeError(resp.header.error.message)
            return int((resp.timestamp.physical << 18) | resp.timestamp.logical)
    raise RuntimeError("empty TSO stream")


def pods_ready(node: Node, pod: str = "") -> None:
    """`kubectl wait` for the Ready condition: one pod, or every TiKV pod."""
    which = [pod] if pod else ["-l", SELECTOR]
    node.kubectl(
        "wait", "-n", NS, "--for=condition=Ready", "pod", *which, "--timeout=300s", timeout=320
    )


def pod_ips(node: Node) -> dict[str, str]:
    pods = get_json(node, "pods", "-n", NS, "-l", SELECTOR)["items"]
    return {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods}


def pod(node: Node, name: str) -> dict[str, Any]:
    """The pod's object ({} when there is none)."""
    out = node.kubectl("get", "pod", "-n", NS, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def leader_pod(node: Node) -> str:
    lease = get_json(node, "lease", "-n", NS, f"{CLUSTER}-pd-leader")
    holder: str = lease["spec"].get("holderIdentity", "")
    return holder.split("@", 1)[0]


def pd_store_counts(ip: str, context: ssl.SSLContext | None = None) -> dict[str, tuple[int, int]]:
    """(regions, leaders) per pod of the Up stores, as PD's /pd/api/v1/stores on the
    status port of the pod at `ip` reports them (https with `context`); {} while it
    cannot say."""
    if not ip:
        return {}
    url = f"{'https' if context else 'http'}://{ip}:2381/pd/api/v1/stores"
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as r:
            data = json.load(r)
    except (OSError, ValueError):
        return {}
    return {
        s["store"]["address"].split(".")[0]: (
            int(s["status"].get("region_count", 0)),
            int(s["status"].get("leader_count", 0)),
        )
        for s in data.get("stores", [])
        if s["store"].get("state_name") == "Up"
    }


def store_counts(node: Node) -> dict[str, tuple[int, int]]:
    """The pd-leader's sidecar's counts (pd_store_counts)."""
    return pd_store_counts(pod_ips(node).get(leader_pod(node), ""))


def stores_up(node: Node) -> list[dict[str, Any]]:
    items = get_json(node, "tikvstores", "-n", NS)["items"]
    return [s for s in items if s.get("status", {}).get("state") == "Up"]


@pytest.fixture(scope="module")
def release(node: Node) -> Iterator[Node]:
    node.kubectl("create", "namespace", NS)
    t0 = time.monotonic()
    HELM_INSTALLED.append(t0)
    node.helm(
        "install",
        RELEASE,
        str(ROOT / "charts" / "kubepd"),
        "--namespace",
        SYSTEM_NS,
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "300s",
    )
    print(f"\nhelm install --wait: {time.monotonic() - t0:.1f} s")
    try:
        yield node
    finally:
        node.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        node.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, check=False)


def test_helm_install_runs_the_operator(release: Node) -> None:
    deploy = get_json(release, "deployment", "-n", SYSTEM_NS, f"{RELEASE}-kubepd-operator")
    assert deploy["status"].get("readyReplicas") == 1, deploy["status"]


def test_three_store_cluster_bootstraps_with_ready_pods(release: Node) -> None:
    t0 = time.monotonic()
    release.kubectl("apply", "-f", "-", input=CLUSTER_YAML)
    # Ready by their probes: the stand-in's TiKV port and the sidecar's /health.
    wait_for(lambda: len(pod_ips(release)) == 3, "three TiKV pods", 60)
    pods_ready(release)
    wait_for(lambda: len(stores_up(release)) == 3, "three stores Up", 120)
    elapsed = time.monotonic() - t0
    out = release.kubectl("get", "-n", NS, "tikvclusters,tikvstores").stdout
    since_helm = time.monotonic() - HELM_INSTALLED[0]
    print(
        f"\nTiKVCluster applied → 3 stores Up in {elapsed:.1f} s; "
        f"helm install → bootstrapped cluster, 3 stores Up: {since_helm:.1f} s\n{out}"
    )
    assert out.count(" Up ") == 3, out
    stores = stores_up(release)
    addresses = sorted(s["spec"]["address"] for s in stores)
    assert addresses == [f"{CLUSTER}-{i}.{CLUSTER}-peer.{NS}.svc:20160" for i in range(3)], (
        addresses
    )
    # The bootstrapping store's 16 regions get their two other replicas by snapshots from
    # pod to pod, and leaders go to the other two stores.
    t0 = time.monotonic()
    three = [f"{CLUSTER}-{i}" for i in range(3)]
    wait_for(
        lambda: (
            (c := store_counts(release))
            and all(c.get(p, (0, 0))[0] == REGIONS for p in three)
            and all(c[p][1] >= 1 for p in three)
            and c
        ),
        f"{REGIONS} regions on each store, leaders on each",
        180,
        detail=lambda: str(store_counts(release)),
    )
    print(
        f"3 replicas of {REGIONS} regions: {time.monotonic() - t0:.1f} s; {store_counts(release)}"
    )


def in_pod(node: Node, pod: str, code: str) -> str:
    """Python run in the pod's kubepd container, through `kubectl exec`."""
    return node.kubectl("exec", "-n", NS, pod, "-c", "kubepd", "--", "python3", "-c", code).stdout


def test_headless_service_names_resolve_in_pods(release: Node) -> None:
    ips = pod_ips(release)
    name = f"{CLUSTER}-0.{CLUSTER}-peer.{NS}.svc"
    got = in_pod(release, f"{CLUSTER}-1", f"import socket; print(socket.gethostbyname({name!r}))")
    assert got.strip() == ips[f"{CLUSTER}-0"]
    # Short names through the pod's search path: the client Service of its namespace,
    # and kubernetes.default.
    code = "import socket; print(socket.gethostbyname('{}'))"
    pd = release.kubectl(
        "get", "svc", "-n", NS, f"{CLUSTER}-pd", "-o", "jsonpath={.spec.clusterIP}"
    )
    assert in_pod(release, f"{CLUSTER}-2", code.format(f"{CLUSTER}-pd")).strip() == pd.stdout
    assert in_pod(release, f"{CLUSTER}-2", code.format("kubernetes.default")).strip() == "10.0.0.1"


def test_pod_traffic_stays_on_the_machine(release: Node) -> None:
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=3)\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    out = in_pod(release, f"{CLUSTER}-0", code).strip()
    # Refused at once by the node's namespace, which has no route out (not a timeout).
    assert out in (str(errno.ENETUNREACH), str(errno.EHOSTUNREACH)), out


def store_states(node: Node) -> dict[str, str]:
    items = get_json(node, "tikvstores", "-n", NS)["items"]
    return {s["spec"]["address"].split(".")[0]: s.get("status", {}).get("state", "") for s in items}


def test_scale_out_to_five_with_kubectl_scale_and_regions_balance(release: Node) -> None:
    t0 = time.monotonic()
    release.kubectl("scale", "tikvcluster", "-n", NS, CLUSTER, "--replicas=5")
    wait_for(lambda: len(pod_ips(release)) == 5, "five TiKV pods", 60)
    pods_ready(release)
    wait_for(lambda: len(stores_up(release)) == 5, "five stores Up", 120)
    t1 = time.monotonic()
    # 48 peers over 5 stores: PD moves regions (snapshot to the new pod, promote, hand
    # the leader off if it moves, remove the old peer) and leaders onto the new stores.
    new = [f"{CLUSTER}-3", f"{CLUSTER}-4"]
    counts = wait_for(
        lambda: (
            (c := store_counts(release))
            and all(c.get(p, (0, 0))[0] >= 5 and c[p][1] >= 1 for p in new)
            and sum(r for r, _ in c.values()) == 3 * REGIONS
            and sum(n for _, n in c.values()) == REGIONS
            and c
        ),
        "regions and leaders on basic-3 and basic-4",
        240,
        detail=lambda: str(store_counts(release)),
    )
    print(
        f"\nscale 3 → 5: 5 stores Up in {t1 - t0:.1f} s, regions and leaders on the new "
        f"stores {time.monotonic() - t1:.1f} s later; (regions, leaders): {counts}"
    )


def test_scale_in_to_three_tombstones_the_drained_stores(release: Node) -> None:
    t0 = time.monotonic()
    release.kubectl("scale", "tikvcluster", "-n", NS, CLUSTER, "--replicas=3")
    gone = [f"{CLUSTER}-3", f"{CLUSTER}-4"]
    wait_for(
        lambda: all(store_states(release).get(p) == "Tombstone" for p in gone),
        "stores of basic-3 and basic-4 Tombstone",
        180,
    )
    wait_for(
        lambda: sorted(pod_ips(release)) == [f"{CLUSTER}-{i}" for i in range(3)], "3 pods", 120
    )
    wait_for(
        lambda: (
            not any(
                p.endswith(tuple(gone))
                for p in release.kubectl("get", "pvc", "-n", NS, "-o", "name").stdout.split()
            )
        ),
        "their PVCs deleted (scaleInPVCPolicy: Delete)",
        120,
    )
    assert len(stores_up(release)) == 3
    # Every region has its three replicas on the three stores left.
    wait_for(
        lambda: (
            (c := store_counts(release))
            and sorted(c) == [f"{CLUSTER}-{i}" for i in range(3)]
            and all(r == REGIONS for r, _ in c.values())
        ),
        f"{REGIONS} regions on each of the 3 stores",
        120,
        detail=lambda: str(store_counts(release)),
    )
    print(f"\nscale 5 → 3 (2 Tombstone, pods and PVCs gone): {time.monotonic() - t0:.1f} s")


def test_rolling_upgrade_replaces_every_pod_keeping_its_store(release: Node) -> None:
    before = {s["spec"]["address"]: s["spec"]["storeID"] for s in stores_up(release)}
    new = f"kubepd-tikv-standin:{VERSION}-next"
    release.ctr(
        "images",
        "tag",
        f"docker.io/library/kubepd-tikv-standin:{VERSION}",
        f"docker.io/library/{new}",
    )
    release.kubectl(
        "patch",
        "tikvcluster",
        "-n",
        NS,
        CLUSTER,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"image": new}}),
    )

    def upgraded() -> bool:
        pods = get_json(release, "pods", "-n", NS, "-l", SELECTOR)["items"]
        return len(pods) == 3 and all(
            any(c["name"] == "tikv" and c["image"] == new for c in p["spec"]["containers"])
            and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
            for p in pods
        )

    t0 = time.monotonic()
    wait_for(upgraded, "every pod on the new image and Ready", 400)
    print(f"\nrolling upgrade of 3 pods: {time.monotonic() - t0:.1f} s")
    wait_for(lambda: len(stores_up(release)) == 3, "three stores Up after the upgrade", 120)
    after = {s["spec"]["address"]: s["spec"]["storeID"] for s in stores_up(release)}
    assert after == before  # each pod came back as the same store (its volume kept)

    # Pod by pod, the operator evicted the store's leaders (moved to the other pods'
    # stand-ins) before the restart, within leaderEvictionTimeoutSeconds.
    def events(reason: str) -> list[str]:
        items = get_json(release, "events", "-n", NS)["items"]
        return [
            e.get("message", "")
            for e in items
            if e.get("reason") == reason and e["involvedObject"].get("name") == CLUSTER
        ]

    wait_for(
        lambda: all(
            any(f"of pod {CLUSTER}-{i}" in m for m in events("EvictingLeaders")) for i in range(3)
        ),
        "an EvictingLeaders event for each pod",
        60,
        detail=lambda: str(events("EvictingLeaders")),
    )
    assert events("LeaderEvictionStalled") == []


def test_scheduling_policy_applied_with_kubectl_runs(release: Node) -> None:
    """A SchedulingPolicy (the example leader balancer, built by policies/build.sh) applied
    with kubectl: the pd-leader's sidecar loads it and runs it on the real pods' regions,
    and `kubectl get schedulingpolicies` shows it Running with a growing run count."""
    subprocess.run(["bash", str(ROOT / "policies" / "build.sh")], check=True, capture_output=True)
    module = (ROOT / "policies" / "build" / "balance_leader.wasm").read_bytes()
    policy = {
        "apiVersion": "kubepd.io/v1alpha1",
        "kind": "SchedulingPolicy",
        "metadata": {"name": "balance", "namespace": NS},
        "spec": {
            "cluster": CLUSTER,
            "module": {"inline": base64.b64encode(module).decode()},
            "config": {"batch": 4, "tolerance": 1},
            "intervalSeconds": 1,
        },
    }
    release.kubectl("apply", "-f", "-", input=json.dumps(policy))

    def status() -> dict[str, Any]:
        st: dict[str, Any] = (
            get_json(release, "schedulingpolicy", "-n", NS, "balance").get("status") or {}
        )
        return st

    first = wait_for(
        lambda: (st := status()).get("phase") == "Running" and int(st.get("runs", 0)) > 0 and st,
        "the policy Running",
        120,
    )
    assert first.get("lastError", "") == "", first
    assert first["moduleDigest"] == f"sha256:{hashlib.sha256(module).hexdigest()}", first
    runs = int(first["runs"])
    wait_for(lambda: int(status().get("runs", 0)) > runs + 2, "more runs of the policy", 60)
    out = release.kubectl("get", "schedulingpolicies", "-n", NS).stdout
    print(f"\n{out}")
    assert "Running" in out.splitlines()[1], out
    release.kubectl("delete", "schedulingpolicy", "-n", NS, "balance")


def test_deleted_pd_leader_pod_is_replaced_and_tso_never_goes_back(release: Node) -> None:
    """Delete the pd-leader's pod; time until a timestamp is served again (by the new
    pd-leader, through another pod's sidecar), higher than every one before. Rounds:
    KUBEPD_NODE_FAILOVERS (default 2; the benchmark in docs uses 10)."""
    times = []
    errors: list[str] = []  # the last TSO error, for a timeout's message
    for _ in range(int(os.environ.get("KUBEPD_NODE_FAILOVERS", "2"))):
        pods_ready(release)
        ips = pod_ips(release)
        old = leader_pod(release)
        other = next(p for p in ips if p != old)

        def first_ts(addr: str = f"{ips[other]}:2379") -> int:
            try:
                return tso(addr)
            except (grpc.RpcError, RuntimeError) as e:
                errors.append(str(e.details() if isinstance(e, grpc.RpcError) else e))
                return 0

        def why(pod: str = other) -> str:
            logs = release.kubectl(
                "logs", "-n", NS, pod, "-c", "kubepd", "--tail=40", check=False
            ).stdout
            return f"last error: {errors[-1:]}; lease: {leader_pod(release)}\n{logs}"

        uid = pod(release, old)["metadata"]["uid"]
        before = wait_for(first_ts, f"TSO through {other} before the deletion", 60, detail=why)
        t0 = time.monotonic()
        release.kubectl("delete", "pod", "-n", NS, old, "--wait=false")

        def new_leader_ts(old: str = old, addr: str = f"{ips[other]}:2379") -> int:
            if leader_pod(release) in ("", old):
                return 0
            try:
                return tso(addr, timeout=0.5)
            except (grpc.RpcError, RuntimeError) as e:
                errors.append(str(e.details() if isinstance(e, grpc.RpcError) else e))
                return 0

        after = wait_for(new_leader_ts, "a new pd-leader serving TSO", 60, interval=0.1, detail=why)
        times.append(time.monotonic() - t0)
        assert after > before

        # The StatefulSet brings the pod back; it becomes Ready and its store Up again.
        # A new pod object (another uid) with an address: the deleted one is listed, and
        # may still be Ready, while it terminates.
        def recreated(name: str = old, gone: str = uid) -> bool:
            p = pod(release, name)
            return bool(p) and p["metadata"]["uid"] != gone and bool(p["status"].get("podIP"))

        wait_for(recreated, f"{old} recreated", 60)
        pods_ready(release, old)
        wait_for(lambda: len(stores_up(release)) == 3, "three stores Up again", 120)
    times.sort()
    print(
        f"\npd-leader pod deleted → first new timestamp, {len(times)} rounds: "
        f"median {statistics.median(times):.2f} s, worst {times[-1]:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in times)})"
    )


def test_helm_uninstall_removes_the_release(release: Node) -> None:
    release.kubectl("delete", "tikvcluster", "-n", NS, CLUSTER, "--timeout=120s", timeout=150)
    wait_for(lambda: not pod_ips(release), "the TiKV pods gone", 120)
    release.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout", "120s")
    t0 = time.monotonic()

    def left() -> list[str]:
        return release.kubectl(
            "get",
            "deploy,rs,pods,sa,cm",
            "-n",
            SYSTEM_NS,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "name",
        ).stdout.split()

    wait_for(lambda: not left(), "the operator's objects and pod gone", 90)
    print(f"\nhelm uninstall: operator pod gone {time.monotonic() - t0:.1f} s after it returned")
    roles = release.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name").stdout
    assert f"{RELEASE}-kubepd" not in roles
    # What stays, as Helm does for a chart's crds/: the CRDs.
    assert "tikvclusters.kubepd.io" in release.kubectl("get", "crd", "-o", "name").stdout
