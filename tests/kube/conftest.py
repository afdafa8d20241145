"""One real kube-apiserver + etcd per test session (with kube-controller-manager),
with kubepd's CRDs applied; always torn down."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pdcore.adapters.kube.client import KubeClient
from tests.support.kubecluster import KubeCluster, binary
from tests.support.sidecars import fleet_on, pods  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"), with_controller_manager=True)
    try:
        cluster.start()
        kubectl(cluster, "apply", "-f", str(ROOT / "deploy" / "crds"))
        kubectl(cluster, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield cluster
    finally:
        cluster.stop()


def kubectl(
    cluster: KubeCluster, *args: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
        input=input,
    )


@pytest.fixture
async def kube(kube_cluster: KubeCluster) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(kube_cluster.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


_ns = iter(range(1, 10_000))


@pytest.fixture
async def namespace(kube: KubeClient) -> str:
    name = f"t{next(_ns)}"
    await kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


from tests.support.operator_run import operator  # noqa: E402, F401  (fixture; needs kubectl above)
