"""What the operator builds for a TiKVCluster with spec.tls: the Secret mounted in both
containers, the sidecar's TLS flags (accepted by `kubepd sidecar`), https URLs by DNS
name, TiKV's [security] table, probes a kubelet without a certificate can pass; and the
operator's own certificate for the scheduler role."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pd_operator import resources
from pd_operator.tls import TLS_DIR_ENV, operator_security

from pdcore.adapters.tls import Security
from pdcore.cli.main import build_parser
from tests.support.certs import CertAuthority


def cluster(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubepd.io/v1alpha1",
        "kind": "TiKVCluster",
        "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
        "spec": {"replicas": 3, "image": "tikv", **spec},
    }


def containers(body: dict[str, Any]) -> dict[str, Any]:
    pod = resources.statefulset(body)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def test_without_tls_nothing_changes() -> None:
    body = cluster()
    pod = resources.statefulset(body)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["config"]
    pd = containers(body)["kubepd"]
    assert "--cacert" not in pd["args"] and "http://$(POD_IP):2379" in pd["args"]
    assert pd["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "security" not in tomllib.loads(resources.configmap(body)["data"]["tikv.toml"])


def test_client_port_http_off_reaches_the_sidecar_and_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "c-0")
    monkeypatch.setenv("KUBEPD_CLUSTER", "c")
    assert "--client-port-http" not in containers(cluster())["kubepd"]["args"]
    args = containers(cluster(sidecar={"clientPortHTTP": False}))["kubepd"]["args"]
    assert args[args.index("--client-port-http") + 1] == "off"
    parsed = build_parser().parse_args([a.replace("$(POD_IP)", "10.0.0.1") for a in args])
    assert parsed.client_port_http == "off"


def test_with_tls_the_secret_is_mounted_and_the_sidecar_serves_mtls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = cluster(tls={"secretName": "c-tls", "certAllowedCN": ["tikv", "kubepd"]})
    pod = resources.statefulset(body)["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "c-tls"}} in pod["volumes"]
    mount = {"name": "tls", "mountPath": "/etc/kubepd/tls", "readOnly": True}
    for c in containers(body).values():
        assert mount in c["volumeMounts"], c["name"]
    pd = containers(body)["kubepd"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert pd[probe]["tcpSocket"] == {"port": resources.STATUS_PORT}
        assert "httpGet" not in pd[probe]
    monkeypatch.setenv("POD_NAME", "c-0")
    monkeypatch.setenv("KUBEPD_CLUSTER", "c")
    args = build_parser().parse_args(pd["args"])
    assert (args.cacert, args.cert, args.key) == (
        "/etc/kubepd/tls/ca.crt",
        "/etc/kubepd/tls/tls.crt",
        "/etc/kubepd/tls/tls.key",
    )
    assert args.cert_allowed_cn == "tikv,kubepd"
    assert args.client_urls == "https://0.0.0.0:2379"
    assert args.advertise_client_urls == "https://$(POD_NAME).c-peer.$(POD_NAMESPACE).svc:2379"
    security = tomllib.loads(resources.configmap(body)["data"]["tikv.toml"])["security"]
    assert security == {
        "ca-path": "/etc/kubepd/tls/ca.crt",
        "cert-path": "/etc/kubepd/tls/tls.crt",
        "key-path": "/etc/kubepd/tls/tls.key",
    }


def test_the_operator_uses_its_own_certificate_for_a_tls_cluster(tmp_path: Path) -> None:
    assert operator_security(cluster(), {}) == Security()
    body = cluster(tls={"secretName": "c-tls", "certAllowedCN": ["kubepd"]})
    with pytest.raises(ValueError, match="operator has no certificate"):
        operator_security(body, {})
    with pytest.raises(ValueError, match="cannot read"):
        operator_security(body, {TLS_DIR_ENV: str(tmp_path)})
    ca = CertAuthority(tmp_path / "ca")
    pem = ca.issue("kubepd-operator", server=True)
    (tmp_path / "ca.crt").write_bytes(ca.path.read_bytes())
    (tmp_path / "tls.crt").write_bytes(pem.cert.read_bytes())
    (tmp_path / "tls.key").write_bytes(pem.key.read_bytes())
    sec = operator_security(body, {TLS_DIR_ENV: str(tmp_path)})
    assert sec == Security(
        str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"), ("kubepd",)
    )
