"""TLS and mutual TLS on a running kubepd, configured as PD's are: clients need a
certificate from the CA, cert-allowed-cn admits only the listed common names, plain
text is refused, and a rotated server certificate is picked up without a restart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest

from pdcore.adapters.tls import Security
from pdcore.app import PdServer, ServerOptions
from pdcore.cli import scheduler_host, security_flags, serve
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.support.certs import CertAuthority, Pem, client_context


@dataclass
class Tls:
    server: PdServer
    ca: CertAuthority
    server_pem: Pem
    tikv: Pem
    intruder: Pem
    stranger: Pem  # right name, wrong CA


@contextlib.asynccontextmanager
async def tls_server(tmp_path: Path, scheduling: bool) -> AsyncIterator[Tls]:
    ca = CertAuthority(tmp_path / "ca")
    server_pem = ca.issue("pd-server", server=True)
    sec = Security(str(ca.path), str(server_pem.cert), str(server_pem.key), ("tikv",))
    server = PdServer(
        ServerOptions(
            client_urls=["http://127.0.0.1:0"],
            status_addr="127.0.0.1:0",
            enable_scheduling=scheduling,
            security=sec,
        )
    )
    await server.start()
    try:
        yield Tls(
            server,
            ca,
            server_pem,
            ca.issue("tikv"),
            ca.issue("intruder"),
            CertAuthority(tmp_path / "other", "other-ca").issue("tikv"),
        )
    finally:
        await server.stop(0)


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[Tls]:
    async with tls_server(tmp_path, scheduling=False) as t:
        yield t


@pytest.fixture
async def tls_scheduling(tmp_path: Path) -> AsyncIterator[Tls]:
    """The same, scheduling (so it has the scheduling API)."""
    async with tls_server(tmp_path, scheduling=True) as t:
        yield t


def channel(t: Tls, client: Pem | None, root: Path | None = None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(root or t.ca.path).read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(t.server.client_address, creds)


async def members(ch: grpc.aio.Channel) -> pdpb_pb2.GetMembersResponse:
    resp: pdpb_pb2.GetMembersResponse = await pdpb_pb2_grpc.PDStub(ch).GetMembers(
        pdpb_pb2.GetMembersRequest(), timeout=3
    )
    return resp


def http_context(t: Tls, client: Pem | None) -> ssl.SSLContext:
    return client_context(t.ca, client)


async def http_status(t: Tls, client: Pem | None) -> int:
    url = f"https://{t.server.status_address}/pd/api/v1/members"
    async with aiohttp.ClientSession() as s, s.get(url, ssl=http_context(t, client)) as r:
        return r.status


async def test_grpc_needs_a_client_certificate_from_the_ca_with_an_allowed_name(
    tls: Tls,
) -> None:
    async with channel(tls, tls.tikv) as ch:
        resp = await members(ch)
        assert resp.leader.client_urls[0].startswith("https://")
    for client in (None, tls.stranger):
        async with channel(tls, client) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await members(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    async with channel(tls, tls.intruder) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await members(ch)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "intruder" in (e.value.details() or "")
        tso = pdpb_pb2_grpc.PDStub(ch).Tso()  # the Tso fast path is admitted the same way
        await tso.write(pdpb_pb2.TsoRequest(count=1))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await tso.read()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with grpc.aio.insecure_channel(tls.server.client_address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await members(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_http_needs_the_same(tls: Tls) -> None:
    assert await http_status(tls, tls.tikv) == 200
    assert await http_status(tls, tls.intruder) == 403
    with pytest.raises(aiohttp.ClientError):
        await http_status(tls, None)
    url = f"http://{tls.server.status_address}/pd/api/v1/members"
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            await r.read()


async def test_a_rotated_server_certificate_is_used_without_a_restart(
    tls: Tls, tmp_path: Path
) -> None:
    new_ca = CertAuthority(tmp_path / "rotated", "rotated-ca")
    fresh = new_ca.issue("pd-server", server=True)
    shutil.copy(fresh.key, tls.server_pem.key)
    shutil.copy(fresh.cert, tls.server_pem.cert)
    deadline = time.monotonic() + 15
    grpc_ok = http_ok = False
    while not (grpc_ok and http_ok):
        assert time.monotonic() < deadline, f"not reloaded: grpc {grpc_ok}, http {http_ok}"
        if not grpc_ok:
            async with channel(tls, tls.tikv, root=new_ca.path) as ch:
                try:
                    await members(ch)
                    grpc_ok = True
                except grpc.aio.AioRpcError:
                    pass
        if not http_ok:
            ctx = ssl.create_default_context(cafile=str(new_ca.path))
            ctx.load_cert_chain(str(tls.tikv.cert), str(tls.tikv.key))
            url = f"https://{tls.server.status_address}/pd/api/v1/members"
            try:
                async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx) as r:
                    http_ok = r.status == 200
            except aiohttp.ClientError:
                pass
        await asyncio.sleep(0.2)


def test_serve_reads_pd_style_security_config_and_flags(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "ca")
    pem = ca.issue("pd-server", server=True)
    cfg = tmp_path / "pd.toml"
    cfg.write_text(
        f'name = "pd"\n[security]\ncacert-path = "{ca.path}"\ncert-path = "{pem.cert}"\n'
        f'key-path = "{pem.key}"\ncert-allowed-cn = ["tikv", "tidb"]\n'
    )
    loaded = serve.load_config(str(cfg))
    no_flags = argparse.Namespace(cacert=None, cert=None, key=None, cert_allowed_cn=None)
    sec = security_flags.security_of(no_flags, loaded.get("security"))
    assert sec == Security(str(ca.path), str(pem.cert), str(pem.key), ("tikv", "tidb"))
    other = ca.issue("pd-2", server=True)
    flags = argparse.Namespace(
        cacert=None, cert=str(other.cert), key=str(other.key), cert_allowed_cn="tikv"
    )
    from_flags = security_flags.security_of(flags, loaded.get("security"))
    assert from_flags.cert_path == str(other.cert) and from_flags.cert_allowed_cn == ("tikv",)
    with pytest.raises(SystemExit, match="set both --cert and --key"):
        security_flags.security_of(argparse.Namespace(cacert=None, cert=str(pem.cert), key=None))
    bad = tmp_path / "bad.toml"
    bad.write_text('[security]\ncert-allowed-cn = "tikv"\n')
    with pytest.raises(SystemExit, match="must be a list of strings"):
        serve.load_config(str(bad))
    bad.write_text('[security]\nca-path = "x"\n')
    with pytest.raises(SystemExit, match="unknown key 'ca-path'"):
        serve.load_config(str(bad))


def test_scheduler_host_reads_a_security_only_config_file(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "ca")
    pem = ca.issue("kubepd-scheduler", server=True)
    cfg = tmp_path / "scheduler.toml"
    cfg.write_text(
        f'[security]\ncacert-path = "{ca.path}"\ncert-path = "{pem.cert}"\n'
        f'key-path = "{pem.key}"\ncert-allowed-cn = ["kubepd-member"]\n'
    )
    parser = argparse.ArgumentParser()
    scheduler_host.add_parser(parser.add_subparsers())
    args = parser.parse_args(["scheduler-host", "--cluster", "c", "--config", str(cfg)])
    sec = security_flags.security_of(args, security_flags.security_file(args.config))
    assert sec == Security(str(ca.path), str(pem.cert), str(pem.key), ("kubepd-member",))
    cfg.write_text('cluster = "c"\n[security]\n')  # only [security] belongs in this file
    with pytest.raises(SystemExit, match="unknown key 'cluster'"):
        security_flags.security_file(str(cfg))
    cfg.write_text(f'[security]\ncert-path = "{pem.cert}"\n')
    with pytest.raises(SystemExit, match="set both --cert and --key"):
        security_flags.security_of(args, security_flags.security_file(str(cfg)))


async def kubepd(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pdcore.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return int(proc.returncode or 0), out.decode()


async def test_the_scheduling_commands_call_a_tls_server_as_pd_ctl_does(
    tls_scheduling: Tls,
) -> None:
    tls = tls_scheduling
    pd = ["--pd", tls.server.status_address, "--cacert", str(tls.ca.path)]

    def client(pem: Pem) -> list[str]:
        return ["--cert", str(pem.cert), "--key", str(pem.key)]

    code, out = await kubepd("scheduler", "list", *pd, *client(tls.tikv))
    assert code == 0 and "balance-region-scheduler" in out, out
    code, out = await kubepd("policy", "list", *pd, *client(tls.tikv), "--json")
    assert code == 0 and json.loads(out) == [], out
    code, out = await kubepd("operator", "list", *pd, *client(tls.intruder))
    assert code == 1 and "not allowed" in out, out
    code, out = await kubepd("scheduler", "list", *pd)  # no client certificate
    assert code == 1 and "cannot reach https://" in out, out
    code, out = await kubepd("scheduler", "list", "--pd", tls.server.status_address)
    assert code == 1 and "cannot reach http://" in out, out
    code, out = await kubepd("scheduler", "list", *pd, "--cert", str(tls.tikv.cert))
    assert code == 1 and "set both --cert and --key" in out, out


async def test_a_plain_text_error_page_is_reported_not_a_traceback(tls: Tls) -> None:
    # Without scheduling the server has no /schedulers: aiohttp's own 404 page.
    code, out = await kubepd(
        *("scheduler", "list", "--pd", tls.server.status_address, "--cacert", str(tls.ca.path)),
        *("--cert", str(tls.tikv.cert), "--key", str(tls.tikv.key)),
    )
    assert code == 1 and "error: 404" in out and "Traceback" not in out, out
