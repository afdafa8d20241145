"""The node suite: a real one-node Kubernetes cluster (tests/support/node.py) for the
session, with the kubepd images built here (scripts/build-image) imported into its
containerd. Always torn down, also on failure.

Part of `make test` (scripts/test-all installs the node's tools first) and of `make
test-node` alone. Where the machine cannot run a node (not root, no cgroups) the tests
are skipped with that reason; anything else that stops the node fails them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import NODE_BIN, Node, NodeUnavailable, machine_check

ROOT = Path(__file__).resolve().parents[2]


def script(*cmd: str) -> str:
    """Run a build script of ours (cached, so a warm run is instant): its output."""
    out = subprocess.run(["bash", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip()


def built(*cmd: str) -> Path:
    """The directory a build script built into (the last line it prints)."""
    return Path(script(*cmd).splitlines()[-1])


@pytest.fixture(scope="session")
def images() -> list[Path]:
    try:
        machine_check()
    except NodeUnavailable as e:
        pytest.skip(f"this machine cannot run a Kubernetes node: {e}")
    script("scripts/node-deps")
    built("scripts/node-tools")
    pause = built("scripts/build-image", "pause", str(NODE_BIN / "pause"))
    kubepd = built("scripts/build-image")
    return [*sorted(kubepd.glob("*.tar")), pause / "pause.tar"]


@pytest.fixture(scope="session")
def node(images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("node"))
    try:
        n.start(images)
        yield n
    finally:
        n.stop()
