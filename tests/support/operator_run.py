"""The kopf operator in the test process against the real API server, in a fresh
namespace, and small kubectl helpers for tests that drive it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner

from tests.kube.conftest import kubectl
from tests.support.kubecluster import KubeCluster


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
