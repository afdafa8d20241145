"""The official Go PD client and PD's Go HTTP client over mutual TLS against a real
`kubepd serve`, configured as TiDB configures them (a CA, a client certificate and its
key): they work with a certificate the CA signed and an allowed common name, and are
refused with a certificate from another CA or a name not allowed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.conformance.gobuild import build_pdclient, build_pdhttp
from tests.conformance.test_go_client import bootstrap_two_regions
from tests.conformance.test_go_http_client import run_pdhttp
from tests.support.certs import CertAuthority, Pem, client_context
from tests.support.pdproc import PdProcess

pytestmark = pytest.mark.timeout(240)


@dataclass
class TlsPd:
    pd: PdProcess
    ca: CertAuthority
    tidb: Pem
    intruder: Pem  # signed by the CA, a name not allowed
    stranger: Pem  # the allowed name, another CA

    def flags(self, client: Pem) -> list[str]:
        return ["-cacert", str(self.ca.path), "-cert", str(client.cert), "-key", str(client.key)]


@pytest.fixture
def tls_pd(tmp_path: Path) -> Iterator[TlsPd]:
    ca = CertAuthority(tmp_path / "ca")
    server = ca.issue("pd-server", server=True)
    tidb = ca.issue("tidb")
    pd = PdProcess(
        tmp_path / "data",
        name="pd-tls",
        extra=[
            *("--cacert", str(ca.path), "--cert", str(server.cert), "--key", str(server.key)),
            *("--cert-allowed-cn", "tidb"),
        ],
        health_context=client_context(ca, tidb),
        credentials=grpc.ssl_channel_credentials(
            ca.path.read_bytes(), tidb.key.read_bytes(), tidb.cert.read_bytes()
        ),
    ).start()
    try:
        yield TlsPd(
            pd,
            ca,
            tidb,
            ca.issue("intruder"),
            CertAuthority(tmp_path / "other", "other-ca").issue("tidb"),
        )
    finally:
        pd.stop()


def pdclient(t: TlsPd, client: Pem, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(build_pdclient()), "-pd", f"https://{t.pd.address}", *t.flags(client), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_go_pd_client_over_mtls(tls_pd: TlsPd) -> None:
    res = pdclient(tls_pd, tls_pd.tidb, "members")
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1])
    assert seen["cluster_id"] == tls_pd.pd.cluster_id()
    assert seen["members"] == ["pd-tls"] and seen["leader_url"].startswith("https://")
    res = pdclient(tls_pd, tls_pd.tidb, "-n", "2000", "-workers", "8", "tso")
    assert res.returncode == 0, res.stderr[-3000:]
    for refused in (tls_pd.stranger, tls_pd.intruder):
        res = pdclient(tls_pd, refused, "members")
        assert res.returncode != 0, f"{refused.cert.name} was admitted: {res.stdout[-500:]}"


def test_pd_go_http_client_over_mtls(tls_pd: TlsPd) -> None:
    ids = bootstrap_two_regions(tls_pd.pd)
    pdhttp = build_pdhttp()
    assert tls_pd.pd.status.startswith("https://")
    status = ["-url", tls_pd.pd.status]
    out = run_pdhttp(pdhttp, ids, status, *tls_pd.flags(tls_pd.tidb))
    expected_errors = {"store_missing", "region_missing", "set_config_bad"}
    failed = {k: v["err"] for k, v in out.items() if not v["ok"] and k not in expected_errors}
    assert failed == {}
    assert out["members"]["value"] == {"count": 1, "leader": "pd-tls"}
    assert out["stores"]["value"]["count"] == 2 and out["regions"]["value"]["count"] == 2
    admitted = run_pdhttp(pdhttp, ids, status, "-probe", *tls_pd.flags(tls_pd.tidb))
    assert admitted["members"]["ok"] and admitted["stores"]["ok"], admitted
    stranger = run_pdhttp(pdhttp, ids, status, "-probe", *tls_pd.flags(tls_pd.stranger))
    assert not stranger["members"]["ok"] and not stranger["stores"]["ok"]
    intruder = run_pdhttp(pdhttp, ids, status, "-probe", *tls_pd.flags(tls_pd.intruder))
    assert not intruder["members"]["ok"] and "403" in intruder["members"]["err"]
