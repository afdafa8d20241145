"""The operator with a TLS TiKVCluster on the real API server: the StatefulSet it
creates mounts the cluster's Secret and passes the TLS flags, the scheduler role it
holds serves over TLS with the operator's certificate, a cluster asking for TLS from an
operator without a certificate gets a Warning event, and spec.tls needs a Secret name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kube.conftest import kubectl
from tests.support.certs import CertAuthority
from tests.support.kubecluster import KubeCluster
from tests.support.operator_run import apply, get, wait

pytestmark = pytest.mark.timeout(240)

CLUSTER = """apiVersion: kubepd.io/v1alpha1
kind: TiKVCluster
metadata: {name: %s}
spec:
  replicas: 3
  image: pingcap/tikv:v8.5.0
  tls: %s
"""


def test_a_tls_cluster_gets_its_certificates_and_an_operator_speaking_tls(
    kube_cluster: KubeCluster, operator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = operator
    ca = CertAuthority(tmp_path / "ca")
    pem = ca.issue("kubepd-operator", server=True)
    tls_dir = tmp_path / "operator-tls"
    tls_dir.mkdir()
    for name, src in (("ca.crt", ca.path), ("tls.crt", pem.cert), ("tls.key", pem.key)):
        (tls_dir / name).write_bytes(src.read_bytes())
    monkeypatch.setenv("KUBEPD_TLS_DIR", str(tls_dir))
    monkeypatch.setenv("POD_IP", "127.0.0.1")  # the scheduler role then serves Propose
    apply(kube_cluster, ns, CLUSTER % ("secure", "{secretName: secure-tls}"))
    sts = json.loads(
        wait(lambda: get(kube_cluster, ns, "statefulset", "secure", "-o", "json"), what="sts")
    )
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "secure-tls"
    by_name = {c["name"]: c for c in pod["containers"]}
    for c in by_name.values():
        assert {"name": "tls", "mountPath": "/etc/kubepd/tls", "readOnly": True} in c[
            "volumeMounts"
        ]
    args = by_name["kubepd"]["args"]
    for flag, path in (("--cacert", "ca.crt"), ("--cert", "tls.crt"), ("--key", "tls.key")):
        assert args[args.index(flag) + 1] == f"/etc/kubepd/tls/{path}"
    assert "https://0.0.0.0:2379" in args
    tikv_toml = get(kube_cluster, ns, "configmap", "secure-config", "-o", "json")
    assert 'cert-path = "/etc/kubepd/tls/tls.crt"' in json.loads(tikv_toml)["data"]["tikv.toml"]
    holder = wait(
        lambda: get(
            kube_cluster,
            ns,
            "lease",
            "secure-scheduler",
            "--ignore-not-found",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ),
        what="the scheduler Lease",
    )
    assert holder.startswith("operator-") and "@https://127.0.0.1:" in holder, holder
    # Without its own certificate the operator says why instead of speaking plain text.
    monkeypatch.delenv("KUBEPD_TLS_DIR")
    apply(kube_cluster, ns, CLUSTER % ("nocert", "{secretName: nocert-tls}"))
    events = wait(
        lambda: (
            out
            if "operator has no certificate"
            in (
                out := get(
                    kube_cluster, ns, "events", "--field-selector", "involvedObject.name=nocert"
                )
            )
            else ""
        ),
        what="the TLS warning",
    )
    assert "Warning" in events
    # spec.tls without a Secret name is refused by the API server.
    refused = kubectl(
        kube_cluster,
        *("-n", ns, "apply", "--dry-run=server", "-f", "-"),
        check=False,
        input=CLUSTER % ("noname", "{certAllowedCN: [tikv]}"),
    )
    assert refused.returncode != 0 and "secretName" in refused.stderr, refused.stderr
