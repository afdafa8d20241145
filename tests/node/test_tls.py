"""A TiKVCluster with `spec.tls` on the real node: the chart installed with the operator's
certificate (`tls.enabled`, `tls.create`), the cluster's certificate in a Secret of its
namespace, and the pods (TiKV stand-in and sidecar) talking over mutual TLS: the stand-in
to its sidecar on 127.0.0.1, the sidecars to each other by their peer-Service names, the
stand-ins to each other (snapshots, leader hand-offs) and the operator to the sidecars.

Runs after test_chart.py (which uninstalls its release) with a release of its own."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.node.test_chart import REGIONS, ROOT, cluster_yaml, pd_store_counts, wait_for
from tests.support.certs import CertAuthority, Pem
from tests.support.node import Node

pytestmark = pytest.mark.timeout(1200)
RELEASE, SYSTEM_NS, NS, CLUSTER, SECRET = "kubepd", "kubepd-system", "tikv-tls", "secure", "tls"
SELECTOR = f"app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/name=tikv"

CLUSTER_YAML = cluster_yaml(CLUSTER, NS, f"  tls: {{secretName: {SECRET}}}\n")


class Certs:
    def __init__(self, directory: Path) -> None:
        self.ca = CertAuthority(directory / "ca")
        # One certificate for every pod: server and client, the names docs/kubernetes.md
        # lists (127.0.0.1 is always in it here).
        self.member: Pem = self.ca.issue(
            "kubepd-member",
            server=True,
            dns=(f"*.{CLUSTER}-peer.{NS}.svc", f"{CLUSTER}-pd.{NS}.svc"),
        )
        self.operator: Pem = self.ca.issue(
            "kubepd-operator",
            server=True,
            name="operator",
            dns=(f"kubepd-operator.{RELEASE}-kubepd-operator.{SYSTEM_NS}.svc",),
        )

    def client_context(self) -> ssl.SSLContext:
        """The tests' HTTPS client: the cluster's CA and certificate; pods are called by
        IP, which the certificate does not name."""
        ctx = ssl.create_default_context(cafile=str(self.ca.path))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(self.member.cert), str(self.member.key))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_release(node: Node, certs: Certs) -> Iterator[Node]:
    node.helm(
        "install",
        RELEASE,
        str(ROOT / "charts" / "kubepd"),
        *("--namespace", SYSTEM_NS, "--create-namespace"),
        *("--set", "image.pullPolicy=Never,tls.enabled=true,tls.create=true"),
        *("--set-file", f"tls.ca={certs.ca.path}"),
        *("--set-file", f"tls.cert={certs.operator.cert},tls.key={certs.operator.key}"),
        *("--wait", "--timeout", "300s"),
    )
    node.kubectl("create", "namespace", NS)
    node.kubectl(
        *("create", "secret", "generic", SECRET, "-n", NS, "--type=kubernetes.io/tls"),
        f"--from-file=ca.crt={certs.ca.path}",
        f"--from-file=tls.crt={certs.member.cert}",
        f"--from-file=tls.key={certs.member.key}",
    )
    try:
        yield node
    finally:
        node.kubectl("delete", "tikvcluster", "-n", NS, CLUSTER, "--timeout=120s", check=False)
        node.kubectl("delete", "namespace", NS, "--timeout=120s", check=False)
        node.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", check=False)


def pods(node: Node) -> dict[str, str]:
    items = json.loads(node.kubectl("get", "pods", "-n", NS, "-l", SELECTOR, "-o", "json").stdout)
    return {p["metadata"]["name"]: p["status"].get("podIP", "") for p in items["items"]}


def leader_pod(node: Node) -> str:
    out = node.kubectl(
        *("get", "lease", "-n", NS, f"{CLUSTER}-pd-leader"),
        *("-o", "jsonpath={.spec.holderIdentity}"),
        check=False,
    )
    return out.stdout.split("@", 1)[0]


def store_counts(node: Node, ctx: ssl.SSLContext) -> dict[str, tuple[int, int]]:
    """The pd-leader's sidecar's counts, over https with the cluster's certificate."""
    return pd_store_counts(pods(node).get(leader_pod(node), ""), ctx)


def tso(certs: Certs, ip: str, pod: str) -> int:
    """A timestamp through a pod's sidecar over mutual TLS (the name its certificate
    carries, the pod's IP to connect to)."""
    creds = grpc.ssl_channel_credentials(
        certs.ca.path.read_bytes(), certs.member.key.read_bytes(), certs.member.cert.read_bytes()
    )
    name = f"{pod}.{CLUSTER}-peer.{NS}.svc"
    with grpc.secure_channel(
        f"{ip}:2379", creds, options=[("grpc.ssl_target_name_override", name)]
    ) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        members = stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=3)
        header = pdpb_pb2.RequestHeader(cluster_id=members.header.cluster_id)
        for resp in stub.Tso(iter([pdpb_pb2.TsoRequest(header=header, count=1)]), timeout=3):
            if resp.header.HasField("error"):
                raise RuntimeError(resp.header.error.message)
            return int((resp.timestamp.physical << 18) | resp.timestamp.logical)
    raise RuntimeError("empty TSO stream")


def test_tls_cluster_bootstraps_and_replicates_over_mutual_tls(
    tls_release: Node, certs: Certs
) -> None:
    node = tls_release
    t0 = time.monotonic()
    node.kubectl("apply", "-f", "-", input=CLUSTER_YAML)
    wait_for(lambda: len(pods(node)) == 3, "three TiKV pods", 60)
    node.kubectl(
        *("wait", "-n", NS, "--for=condition=Ready", "pod", "-l", SELECTOR, "--timeout=300s"),
        timeout=320,
    )
    ctx = certs.client_context()
    three = [f"{CLUSTER}-{i}" for i in range(3)]
    counts = wait_for(
        lambda: (
            (c := store_counts(node, ctx))
            and sorted(c) == three
            and all(r == REGIONS and n >= 1 for r, n in c.values())
            and c
        ),
        f"3 stores Up, {REGIONS} regions on each, leaders on each",
        240,
        detail=lambda: (
            node.kubectl(
                "logs", "-n", NS, f"{CLUSTER}-1", "-c", "tikv", "--tail=20", check=False
            ).stdout
        ),
    )
    print(f"\nTLS cluster applied → 3 replicas of {REGIONS} regions: {time.monotonic() - t0:.1f} s")
    print(f"(regions, leaders): {counts}")
    out = node.kubectl("get", "-n", NS, "tikvclusters,tikvstores").stdout
    assert out.count(" Up ") == 3, out
    ips = pods(node)
    assert tso(certs, ips[three[1]], three[1]) > 0
    # Plain text is refused on the client port (and so is a client without a
    # certificate of the CA).
    with grpc.insecure_channel(f"{ips[three[1]]}:2379") as ch, pytest.raises(grpc.RpcError):
        pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest(), timeout=3)
