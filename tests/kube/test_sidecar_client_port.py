"""Every sidecar's client port, against the real API server: PD's HTTP API beside gRPC
(writes on a follower go to the pd-leader), gRPC health that follows whether the member
can serve, and keyspaces kept as Keyspace custom resources."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdcore.adapters.kube.client import KubeClient
from pdcore.proto import keyspacepb_pb2, keyspacepb_pb2_grpc, pdpb_pb2
from tests.kube.conftest import kubectl
from tests.support.kubecluster import KubeCluster
from tests.support.sidecars import Pods, Sidecar, wait_leader

pytestmark = pytest.mark.timeout(300)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def until(what: str, cond: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)


async def health_of(sc: Sidecar) -> int:
    try:
        async with grpc.aio.insecure_channel(sc.address) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="pdpb.PD"), timeout=2
            )
            return int(resp.status)
    except grpc.aio.AioRpcError:
        return -1


async def http(method: str, sc: Sidecar, path: str, body: Any = None) -> tuple[int, Any]:
    url = f"http://{sc.address}/pd/api/v2/keyspaces{path}"
    async with aiohttp.ClientSession() as s, s.request(method, url, json=body) as r:
        return r.status, await r.json()


async def test_http_health_and_keyspaces_on_every_sidecar(pods: Pods, kube: KubeClient) -> None:
    leader = await wait_leader(kube, pods, timeout=60)  # a loaded 2-core machine is slow
    followers = [sc for sc in pods.sidecars if sc is not leader]
    for sc in pods.sidecars:  # the leader, and followers linked to it
        await until(f"{sc.pod} SERVING", lambda sc=sc: _is(sc, SERVING))  # type: ignore[misc]
    a, b = followers
    # DEFAULT exists from the leader's start and reaches every member's view.
    for sc in pods.sidecars:
        await until(f"DEFAULT on {sc.pod}", lambda sc=sc: _has(sc, "DEFAULT"))  # type: ignore[misc]
    # A write on a follower's client port is done by the pd-leader.
    st, made = await http("POST", a, "", {"name": "tenant_k8s", "config": {"x": "1"}})
    assert st == 200 and made["id"] == 1, made
    st, dup = await http("POST", b, "", {"name": "tenant_k8s"})
    assert st == 500 and "already exists" in dup  # PD's status for a refusal
    st, bad = await http("POST", b, "", {"name": "no spaces"})
    assert st == 500 and "illegal keyspace name" in bad
    await until("tenant_k8s on the other follower", lambda: _has(b, "tenant_k8s"))
    # kubectl shows the keyspaces with their columns.
    out = kubectl(pods.cluster, "get", "keyspaces", "-n", pods.namespace).stdout
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[0][:5] == ["NAME", "CLUSTER", "ID", "KEYSPACE", "STATE"], out
    assert [pods.name + "-keyspace-1", pods.name, "1", "tenant_k8s", "ENABLED"] in [
        r[:5] for r in rows
    ]
    # The gRPC write, on a follower, forwarded too; then the Go-client-visible view.
    cid = await _cluster_id(leader)
    h = pdpb_pb2.RequestHeader(cluster_id=cid)
    async with grpc.aio.insecure_channel(b.address) as ch:
        stub = keyspacepb_pb2_grpc.KeyspaceStub(ch)
        up = await stub.UpdateKeyspaceState(
            keyspacepb_pb2.UpdateKeyspaceStateRequest(header=h, id=1, state=keyspacepb_pb2.DISABLED)
        )
        assert not up.header.HasField("error") and up.keyspace.state == keyspacepb_pb2.DISABLED
        bad_state = await stub.UpdateKeyspaceState(
            keyspacepb_pb2.UpdateKeyspaceStateRequest(
                header=h, id=1, state=keyspacepb_pb2.TOMBSTONE
            )
        )
        assert bad_state.header.error.type == 10  # INVALID_VALUE: DISABLED cannot skip ARCHIVED
    obj = await kube.get(
        f"/apis/kubepd.io/v1alpha1/namespaces/{pods.namespace}/keyspaces/{pods.name}-keyspace-1"
    )
    assert obj["spec"]["state"] == "DISABLED" and obj["spec"]["config"] == {"x": "1"}

    # The pd-leader dies: a follower's health goes NOT_SERVING, and SERVING again once a
    # new pd-leader is up; the keyspace id mark carries over.
    async with grpc.aio.insecure_channel(a.address) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
        pods.kill9(leader)
        assert (await asyncio.wait_for(watch.read(), 20)).status == NOT_SERVING
        assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
        watch.cancel()
    await wait_leader(kube, pods, timeout=60, among=followers)
    st, next_one = await http("POST", a, "", {"name": "tenant_after"})
    assert st == 200 and next_one["id"] == 2, next_one

    # SIGTERM: NOT_SERVING is published before the member goes away.
    await until(f"{b.pod} SERVING again", lambda: _is(b, SERVING))
    async with grpc.aio.insecure_channel(b.address) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
        assert b.proc is not None
        os.killpg(b.proc.pid, signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        watch.cancel()


async def test_client_port_http_off_leaves_every_sidecars_port_to_grpc(
    kube_cluster: KubeCluster, kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    pods = Pods(kube_cluster, namespace, "h2only", tmp_path, extra=["--client-port-http", "off"])
    pods.spawn(2, prefix="tikv")
    try:
        leader = await wait_leader(kube, pods, timeout=60)
        follower = next(sc for sc in pods.sidecars if sc is not leader)
        await until(f"{follower.pod} SERVING", lambda: _is(follower, SERVING))
        for sc in pods.sidecars:
            assert await _cluster_id(sc) == await _cluster_id(leader) != 0  # gRPC on the port
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.ClientError):  # grpc closes an HTTP/1.1 request
                    await s.get(f"http://{sc.address}/pd/api/v2/keyspaces/DEFAULT")
                status = f"http://127.0.0.1:{sc.status_port}/pd/api/v2/keyspaces/DEFAULT"
                async with s.get(status) as r:
                    assert r.status == 200 and (await r.json())["id"] == 0
    finally:
        for sc in pods.sidecars:
            pods.kill9(sc)


async def _is(sc: Sidecar, status: int) -> bool:
    return await health_of(sc) == status


async def _has(sc: Sidecar, name: str) -> bool:
    try:
        st, _ = await http("GET", sc, f"/{name}")
    except (aiohttp.ClientError, json.JSONDecodeError):
        return False
    return st == 200


async def _cluster_id(sc: Sidecar) -> int:
    from pdcore.proto import pdpb_pb2_grpc

    async with grpc.aio.insecure_channel(sc.address) as ch:
        resp = await pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest(), timeout=5)
        return int(resp.header.cluster_id)
