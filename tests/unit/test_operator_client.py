"""The operator keeps its Kubernetes client in kopf's memo, not in a module global:
made at start-up, used by login, closed at cleanup, one per operator run."""

from __future__ import annotations

import json
from pathlib import Path

import kopf
import pytest
from pd_operator import handlers

from pdcore.adapters.kube.client import KubeClient


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": {"token": "t0k3n"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))


async def test_each_operator_run_has_its_own_client_in_its_memo(kubeconfig: None) -> None:
    assert not any(isinstance(v, KubeClient) for v in vars(handlers).values())
    first, second = kopf.Memo(), kopf.Memo()
    with pytest.raises(RuntimeError, match="made at start-up"):
        handlers.client(first)
    for memo in (first, second):
        handlers.configure(settings=kopf.OperatorSettings(), memo=memo)
    assert handlers.client(first) is not handlers.client(second)
    info = await handlers.login(memo=first)
    assert (info.server, info.token) == ("https://127.0.0.1:6443", "t0k3n")
    await handlers.close_client(memo=first)
    with pytest.raises(RuntimeError):
        handlers.client(first)
    assert isinstance(handlers.client(second), KubeClient)
    await handlers.close_client(memo=second)
