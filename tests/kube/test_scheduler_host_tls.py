"""`kubepd scheduler-host` with mutual TLS beside TLS sidecars on a real API server: it
syncs regions and reads stores from the pd-leader over TLS with its own certificate,
delivers its operator steps to the leader store's sidecar over TLS, advertises an https
URL, and its Propose server and HTTP API refuse plain text, a certificate from another
CA and a common name not allowed."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pdcore.adapters.kube.client import KubeClient
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc, metapb_pb2, pdpb_pb2, pdpb_pb2_grpc
from tests.kube.test_scheduler_host import scheduler_holder, start_host
from tests.support.certs import CertAuthority, MemberCerts, Pem, client_context, secure_channel
from tests.support.kubecluster import KubeCluster
from tests.support.ports import free_port
from tests.support.sidecars import Pods, create_tikv_cluster, holder

pytestmark = pytest.mark.timeout(180)


@dataclass
class Booted:
    cid: int
    stores: tuple[int, int]
    region: metapb_pb2.Region


async def bootstrap(address: str, ca: CertAuthority, tikv: Pem) -> Booted:
    """Bootstrap the cluster as TiKV would, over TLS, and add a second store."""
    async with secure_channel(address, ca, tikv) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=5)).header.cluster_id
        h = pdpb_pb2.RequestHeader(cluster_id=cid)
        store, region_id, peer, store2 = [
            (await stub.AllocID(pdpb_pb2.AllocIDRequest(header=h), timeout=5)).id for _ in range(4)
        ]
        region = metapb_pb2.Region(
            id=region_id,
            region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
            peers=[metapb_pb2.Peer(id=peer, store_id=store)],
        )
        resp = await stub.Bootstrap(
            pdpb_pb2.BootstrapRequest(
                header=h,
                store=metapb_pb2.Store(id=store, address="127.0.0.1:20160", version="8.5.0"),
                region=region,
            ),
            timeout=10,
        )
        assert not resp.header.HasField("error"), resp.header.error
        put = await stub.PutStore(
            pdpb_pb2.PutStoreRequest(
                header=h,
                store=metapb_pb2.Store(id=store2, address="127.0.0.1:20161", version="8.5.0"),
            ),
            timeout=10,
        )
        assert not put.header.HasField("error"), put.header.error
        return Booted(int(cid), (int(store), int(store2)), region)


async def step_through_tls(
    address: str, ca: CertAuthority, tikv: Pem, booted: Booted
) -> pdpb_pb2.RegionHeartbeatResponse:
    """Play both stores' TiKV on the pd-leader sidecar over TLS until the scheduler
    host's replica checker sends a step for the one-replica region down the region
    heartbeat stream (the host delivered it to the sidecar over TLS); returns it."""
    async with secure_channel(address, ca, tikv) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        h = pdpb_pb2.RequestHeader(cluster_id=booted.cid)
        region = booted.region
        call = stub.RegionHeartbeat()
        reading = asyncio.ensure_future(call.read())
        deadline = time.monotonic() + 40
        try:
            while time.monotonic() < deadline:
                for sid in booted.stores:
                    stats = pdpb_pb2.StoreStats(
                        store_id=sid, capacity=100 << 30, available=90 << 30, region_count=1
                    )
                    await stub.StoreHeartbeat(
                        pdpb_pb2.StoreHeartbeatRequest(header=h, stats=stats), timeout=5
                    )
                await call.write(
                    pdpb_pb2.RegionHeartbeatRequest(
                        header=h, region=region, leader=region.peers[0], approximate_size=1
                    )
                )
                # Wait without cancelling the read (that would end the stream).
                await asyncio.wait({reading}, timeout=1.0)
                if not reading.done():
                    continue
                resp = reading.result()
                if resp.HasField("change_peer") or resp.HasField("change_peer_v2"):
                    return resp  # type: ignore[no-any-return]
                reading = asyncio.ensure_future(call.read())
            raise AssertionError("no operator step reached the heartbeat stream")
        finally:
            reading.cancel()
            call.cancel()


def health(port: int, ctx: ssl.SSLContext) -> dict[str, object]:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=5, context=ctx) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


async def propose(channel: grpc.aio.Channel, cid: int) -> None:
    await kubepdpb_pb2_grpc.SchedulerStub(channel).Propose(
        kubepdpb_pb2.ProposeRequest(cluster_id=cid, policy="probe"), timeout=5
    )


async def test_scheduler_host_over_mtls(
    kube_cluster: KubeCluster, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    certs = MemberCerts.make(tmp_path)
    ca, tikv, intruder, stranger = certs.ca, certs.tikv, certs.intruder, certs.stranger
    flags = certs.flags()
    pods = Pods(kube_cluster, namespace, "tlsh", tmp_path, extra=flags)
    await create_tikv_cluster(kube, namespace, "tlsh")
    pods.spawn(2, prefix="tikv")
    status_port = free_port()
    host = None
    try:
        deadline = time.monotonic() + 40
        while True:
            h = await holder(kube, namespace, "tlsh")
            leader = next((sc for sc in pods.sidecars if h.startswith(sc.pod + "@")), None)
            if leader is not None:
                try:
                    booted = await bootstrap(leader.address, ca, tikv)
                    cid = booted.cid
                    break
                except grpc.aio.AioRpcError:
                    pass
            assert time.monotonic() < deadline, f"no TLS pd-leader; logs in {tmp_path}"
            await asyncio.sleep(0.3)
        host = start_host(
            pods,
            "tls-host",
            tmp_path / "host.log",
            status_port,
            *("--grpc-addr", "127.0.0.1:0", "--advertise-host", "127.0.0.1"),
            *flags,
        )
        deadline = time.monotonic() + 40
        while not (got := await scheduler_holder(kube, pods)).startswith("tls-host@https://"):
            assert host.poll() is None, (tmp_path / "host.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"scheduler Lease held by {got!r}"
            await asyncio.sleep(0.3)
        grpc_address = got.split("://", 1)[1]
        # Region sync and store reads from the TLS pd-leader, with its own certificate.
        ctx = client_context(ca, tikv)
        deadline = time.monotonic() + 40
        while True:
            try:
                seen = health(status_port, ctx)
                if seen["synced"] and seen["regions"] == 1 and seen["stores"] == 2:
                    break
            except OSError:
                seen = {}
            assert time.monotonic() < deadline, f"never synced over TLS: {seen}"
            await asyncio.sleep(0.3)
        step = await step_through_tls(leader.address, ca, tikv, booted)
        assert step.region_id == booted.region.id, step
        assert health(status_port, ctx)["steps"]["delivered"] >= 1  # type: ignore[index]
        async with secure_channel(grpc_address, ca, tikv) as ch:
            await propose(ch, cid)  # admitted: an empty proposal is answered
        async with secure_channel(grpc_address, ca, intruder) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await propose(ch, cid)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with secure_channel(grpc_address, ca, stranger) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await propose(ch, cid)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(grpc_address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await propose(ch, cid)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            health(status_port, client_context(ca, None))  # no client certificate
        with pytest.raises(urllib.error.HTTPError) as http_error:
            health(status_port, client_context(ca, intruder))
        assert http_error.value.code == 403
    finally:
        if host is not None and host.poll() is None:
            host.kill()
            host.wait()
        for sc in pods.sidecars:
            pods.kill9(sc)


def test_a_taken_grpc_port_is_a_clear_error(pods: Pods, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    log = tmp_path / "host.log"
    try:
        host = start_host(pods, "busy", log, free_port(), "--grpc-addr", f"127.0.0.1:{port}")
        try:
            assert host.wait(30) == 2
        finally:
            if host.poll() is None:
                host.kill()
                host.wait()
    finally:
        taken.close()
    text = log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in text and "Traceback" not in text, text
