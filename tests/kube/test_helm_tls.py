"""The chart with TLS on: `helm template` renders the operator's certificate Secret
(from files given with --set-file, or an existing one by name), mounts it where the
operator reads it, names the pod with a DNS name its certificate can carry, and the
result passes a server-side dry run; with TLS off none of it is rendered."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from pd_operator.resources import TLS_FILES
from pd_operator.tls import TLS_DIR_ENV

from tests.kube.conftest import kubectl
from tests.kube.test_helm import CHART, helm
from tests.support.certs import CertAuthority
from tests.support.kubecluster import KubeCluster

pytestmark = pytest.mark.timeout(120)


def render(cluster: KubeCluster, *sets: str) -> list[dict[str, Any]]:
    out = helm(cluster, "template", "kp", str(CHART), "--namespace", "kubepd-system", *sets)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_with_tls_mounts_the_operators_certificate(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    ca = CertAuthority(tmp_path / "ca")
    pem = ca.issue("kubepd-operator", server=True)
    docs = render(
        kube_cluster,
        *("--set", "tls.enabled=true,tls.create=true"),
        *("--set-file", f"tls.ca={ca.path},tls.cert={pem.cert},tls.key={pem.key}"),
    )
    (secret,) = one(docs, "Secret")
    assert secret["metadata"]["name"] == "kubepd-operator-tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert data == {
        "ca.crt": ca.path.read_bytes(),
        "tls.crt": pem.cert.read_bytes(),
        "tls.key": pem.key.read_bytes(),
    }
    assert set(data) == set(TLS_FILES.values())  # the names the operator reads
    (deploy,) = one(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "tls", "secret": {"secretName": "kubepd-operator-tls"}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [
        {"name": "tls", "mountPath": "/etc/kubepd/tls", "readOnly": True}
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[TLS_DIR_ENV] == "/etc/kubepd/tls"
    # The advertised name resolves to the pod: hostname.subdomain, a headless Service.
    (service,) = one(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert env["KUBEPD_ADVERTISE_HOST"] == (
        f"{pod['hostname']}.{pod['subdomain']}.kubepd-system.svc"
    )
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    kubectl(kube_cluster, "create", "namespace", "kubepd-system", check=False)
    applied = kubectl(kube_cluster, "apply", "--dry-run=server", "-f", str(rendered), check=False)
    assert applied.returncode == 0, applied.stderr


def test_chart_tls_with_an_existing_secret_and_off(kube_cluster: KubeCluster) -> None:
    docs = render(kube_cluster, "--set", "tls.enabled=true,tls.secretName=from-cert-manager")
    assert not one(docs, "Secret")
    (deploy,) = one(docs, "Deployment")
    volumes = deploy["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tls", "secret": {"secretName": "from-cert-manager"}}]
    off = render(kube_cluster)
    assert not one(off, "Secret") and not one(off, "Service")
    (deploy,) = one(off, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert "volumes" not in pod and "subdomain" not in pod
    assert TLS_DIR_ENV not in {e["name"] for e in pod["containers"][0]["env"]}
    missing = helm(
        kube_cluster,
        *("template", "kp", str(CHART), "--set", "tls.enabled=true,tls.create=true"),
        check=False,
    )
    assert missing.returncode != 0 and "tls.create needs tls.ca" in missing.stderr
