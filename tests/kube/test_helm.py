"""The Helm chart and the plain manifests against the real API server: lint, template
applied with a server-side dry run, install and uninstall, and the operator working with
exactly the permissions the chart grants."""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from kopf.testing import KopfRunner

from tests.kube.conftest import ROOT, kubectl
from tests.support.kubecluster import KubeCluster, binary

pytestmark = pytest.mark.timeout(240)
CHART = ROOT / "charts" / "kubepd"


def helm(cluster: KubeCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary("helm")), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def test_chart_lints_and_matches_the_package_version(kube_cluster: KubeCluster) -> None:
    out = helm(kube_cluster, "lint", str(CHART))
    assert "0 chart(s) failed" in out.stdout
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = (CHART / "Chart.yaml").read_text()
    assert f"version: {version}" in chart and f'appVersion: "{version}"' in chart


def test_rendered_chart_and_manifests_pass_a_server_side_dry_run(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    rendered = helm(
        kube_cluster,
        "template",
        "dry",
        str(CHART),
        "--namespace",
        "default",
        "--kube-version",
        "1.33.0",
        "--include-crds",
    ).stdout
    (tmp_path / "chart.yaml").write_text(rendered)
    kubectl(kube_cluster, "create", "namespace", "kubepd-system", check=False)
    for target in (tmp_path / "chart.yaml", ROOT / "deploy"):
        out = kubectl(kube_cluster, "apply", "--dry-run=server", "-f", str(target), check=False)
        assert out.returncode == 0, out.stderr


def test_install_run_operator_with_chart_rbac_and_uninstall(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    ns = f"helm{int(time.time()) % 100000}"
    kubectl(kube_cluster, "create", "namespace", ns)
    helm(
        kube_cluster,
        "install",
        "kp",
        str(CHART),
        "--namespace",
        ns,
        "--set",
        f"operator.watchNamespaces={{{ns}}}",
    )
    assert "deployed" in helm(kube_cluster, "status", "kp", "--namespace", ns).stdout
    # Run the operator as the chart's ServiceAccount, with a token the API server issues.
    token = kubectl(kube_cluster, "-n", ns, "create", "token", "kubepd-operator").stdout.strip()
    cfg = json.loads(kube_cluster.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": token}
    sa_kubeconfig = tmp_path / "sa-kubeconfig"
    sa_kubeconfig.write_text(json.dumps(cfg))
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(sa_kubeconfig)
    os.environ["KUBEPD_SIDECAR_CLUSTERROLE"] = "kp-kubepd-sidecar"  # as the chart's Deployment
    try:
        with KopfRunner(
            ["run", "--standalone", "-n", ns, "-m", "pd_operator.handlers"], timeout=30
        ) as runner:
            manifest = (
                "apiVersion: kubepd.io/v1alpha1\nkind: TiKVCluster\nmetadata: {name: rbac}\n"
                "spec: {replicas: 3, image: tikv}\n"
            )
            subprocess.run(
                [
                    str(binary("kubectl")),
                    f"--kubeconfig={kube_cluster.kubeconfig}",
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
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = kubectl(
                    kube_cluster,
                    "-n",
                    ns,
                    "get",
                    "statefulset",
                    "rbac",
                    "--ignore-not-found",
                    "-o",
                    "name",
                ).stdout
                if got.strip():
                    break
                time.sleep(0.5)
            assert got.strip() == "statefulset.apps/rbac", runner.output[-2000:]
        # Without the chart's binding the same identity is refused, with the API's reason.
        kubectl(kube_cluster, "delete", "clusterrolebinding", "kp-kubepd-operator")
        denied = subprocess.run(
            [
                str(binary("kubectl")),
                f"--kubeconfig={sa_kubeconfig}",
                "-n",
                ns,
                "get",
                "statefulsets",
            ],
            capture_output=True,
            text=True,
        )
        assert denied.returncode != 0 and "forbidden" in denied.stderr
    finally:
        os.environ.pop("KUBEPD_SIDECAR_CLUSTERROLE", None)
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old
    helm(kube_cluster, "uninstall", "kp", "--namespace", ns)
    assert "not found" in helm(kube_cluster, "status", "kp", "--namespace", ns, check=False).stderr
