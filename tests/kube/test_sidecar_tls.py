"""Sidecars with mutual TLS on a real API server: TiKV's side and the sidecars' own
links to each other (TSO relay, forwarded writes) all run over TLS with the members'
certificates; plain text, a certificate from another CA and a name not allowed are
refused."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from pdcore.adapters.kube.client import KubeClient
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.support.certs import CertAuthority, MemberCerts, Pem, client_context, secure_channel
from tests.support.kubecluster import KubeCluster
from tests.support.sidecars import Pods, Sidecar, holder

pytestmark = pytest.mark.timeout(180)


def secure(sc: Sidecar, ca: CertAuthority, client: Pem) -> grpc.aio.Channel:
    return secure_channel(sc.address, ca, client)


async def tso_and_id(ch: grpc.aio.Channel) -> tuple[int, int]:
    stub = pdpb_pb2_grpc.PDStub(ch)
    cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=3)).header.cluster_id
    header = pdpb_pb2.RequestHeader(cluster_id=cid)
    call = stub.Tso()
    await call.write(pdpb_pb2.TsoRequest(header=header, count=1))
    resp = await asyncio.wait_for(call.read(), 10)
    call.cancel()
    alloc = await stub.AllocID(pdpb_pb2.AllocIDRequest(header=header), timeout=10)
    assert not alloc.header.HasField("error"), alloc.header.error
    return int(resp.timestamp.physical), int(alloc.id)


async def test_sidecars_serve_and_talk_to_each_other_over_mtls(
    kube_cluster: KubeCluster, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    certs = MemberCerts.make(tmp_path)
    ca, tikv, intruder, stranger = certs.ca, certs.tikv, certs.intruder, certs.stranger
    pods = Pods(kube_cluster, namespace, "tls", tmp_path, extra=certs.flags())
    pods.spawn(2, prefix="tikv")
    try:
        deadline = time.monotonic() + 40
        while True:  # a leader, and the follower relays TSO and AllocID to it over TLS
            h = await holder(kube, namespace, "tls")
            follower = next(
                (sc for sc in pods.sidecars if h and not h.startswith(sc.pod + "@")), None
            )
            if follower is not None:
                try:
                    async with secure(follower, ca, tikv) as ch:
                        physical, new_id = await tso_and_id(ch)
                    break
                except (grpc.aio.AioRpcError, TimeoutError):
                    pass
            assert time.monotonic() < deadline, "no TSO through a TLS follower; logs in " + str(
                tmp_path
            )
            await asyncio.sleep(0.3)
        assert physical > 0 and new_id > 0
        async with secure(follower, ca, intruder) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await tso_and_id(ch)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with secure(follower, ca, stranger) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await tso_and_id(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(follower.address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await tso_and_id(ch)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        ctx = client_context(ca, tikv)
        url = f"https://127.0.0.1:{follower.status_port}/health"
        with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
            assert r.status == 200
    finally:
        for sc in pods.sidecars:
            pods.kill9(sc)
