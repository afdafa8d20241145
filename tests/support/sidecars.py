"""Sidecar processes for tests against the real API server: `kubepd sidecar` pods as
local processes (short test leases), waiting for the pd-leader, the simulator as TiKV
spread over them, and the Go PD client. Every process is killed on teardown."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from pdcore.adapters.clock import ScaledClock
from pdcore.adapters.kube.client import KubeClient, Obj, crd_path
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from pdsim.fleet import Fleet
from tests.conformance.gobuild import build_pdclient
from tests.support.kubecluster import KubeCluster
from tests.support.ports import free_port

_names = itertools.count(1)


@dataclass
class Sidecar:
    pod: str
    port: int
    status_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Pods:
    cluster: KubeCluster
    namespace: str
    name: str
    workdir: Path
    sidecars: list[Sidecar] = field(default_factory=list)
    kubeconfig: Path | None = None  # default: the cluster admin's
    extra: list[str] = field(default_factory=list)  # more `kubepd sidecar` flags (e.g. TLS)

    def start(self, sc: Sidecar) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "sidecar",
            "--namespace",
            self.namespace,
            "--cluster",
            self.name,
            "--pod-name",
            sc.pod,
            "--kubeconfig",
            str(self.kubeconfig or self.cluster.kubeconfig),
            "--client-urls",
            f"http://{sc.address}",
            "--status-addr",
            f"127.0.0.1:{sc.status_port}",
            "--lease-duration",
            "2",
            "--renew-period",
            "0.3",
            "--log-format",
            "text",
            *self.extra,
        ]
        log = open(sc.log, "ab")  # noqa: SIM115
        sc.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)

    def spawn(self, count: int, prefix: str = "") -> None:
        """Start `count` sidecars named like the StatefulSet's pods, <prefix>-<ordinal>."""
        for i in range(len(self.sidecars), len(self.sidecars) + count):
            pod = f"{prefix or self.name}-{i}"
            sc = Sidecar(pod, free_port(), free_port(), self.workdir / f"{pod}.log")
            self.sidecars.append(sc)
            self.start(sc)

    def kill9(self, sc: Sidecar) -> None:
        if sc.proc is not None and sc.proc.poll() is None:
            os.killpg(sc.proc.pid, signal.SIGKILL)
            sc.proc.wait()


async def create_tikv_cluster(kube: KubeClient, namespace: str, name: str, **spec: object) -> Obj:
    """A TiKVCluster object (3 replicas unless `spec` says otherwise)."""
    return await kube.create(
        crd_path(namespace, "tikvclusters"),
        {
            "apiVersion": "kubepd.io/v1alpha1",
            "kind": "TiKVCluster",
            "metadata": {"name": name},
            "spec": {"replicas": 3, "image": "tikv", **spec},
        },
    )


async def holder(kube: KubeClient, ns: str, name: str) -> str:
    try:
        lease = await kube.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}-pd-leader"
        )
    except Exception:
        return ""
    return str(lease.get("spec", {}).get("holderIdentity") or "")


@pytest.fixture
def pods(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Pods]:
    p = Pods(kube_cluster, namespace, f"c{next(_names)}", tmp_path)
    p.spawn(3, prefix="tikv")
    try:
        yield p
    finally:
        for sc in p.sidecars:
            p.kill9(sc)


async def wait_leader(
    kube: KubeClient, pods: Pods, timeout: float = 20.0, among: list[Sidecar] | None = None
) -> Sidecar:
    """The sidecar holding the pd-leader Lease and serving TSO (one of `among`, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = await holder(kube, pods.namespace, pods.name)
        for sc in pods.sidecars if among is None else among:
            alive = sc.proc is not None and sc.proc.poll() is None
            if h.startswith(sc.pod + "@") and alive and await serves_tso(sc):
                return sc
        await asyncio.sleep(0.2)
    raise AssertionError(
        "no pd-leader within the timeout; logs: " + " ".join(str(s.log) for s in pods.sidecars)
    )


async def answers(sc: Sidecar) -> bool:
    try:
        async with grpc.aio.insecure_channel(sc.address) as ch:
            await pdpb_pb2_grpc.PDStub(ch).GetMembers(pdpb_pb2.GetMembersRequest(), timeout=1)
            return True
    except Exception:
        return False


async def serves_tso(sc: Sidecar) -> bool:
    try:
        async with grpc.aio.insecure_channel(sc.address) as ch:
            stub = pdpb_pb2_grpc.PDStub(ch)
            cid = (await stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=2)).header.cluster_id
            call = stub.Tso()
            await call.write(
                pdpb_pb2.TsoRequest(header=pdpb_pb2.RequestHeader(cluster_id=cid), count=1)
            )
            await asyncio.wait_for(call.read(), 2)
            call.cancel()
            return True
    except Exception:
        return False


@pytest.fixture
async def fleet_on(pods: Pods, kube: KubeClient) -> AsyncIterator[Fleet]:
    fleet = await fleet_for(pods, kube)
    yield fleet
    await fleet.close()


async def fleet_for(pods: Pods, kube: KubeClient) -> Fleet:
    """The simulator as TiKV, store i talking to sidecar i % n, once all answer."""
    leader = await wait_leader(kube, pods)
    for sc in pods.sidecars:  # every pod's PD answers before its TiKV starts
        deadline = time.monotonic() + 20
        while not await answers(sc):
            assert time.monotonic() < deadline, f"{sc.pod} never answered"
            await asyncio.sleep(0.2)
    return Fleet(
        leader.address,
        f"127.0.0.1:{leader.status_port}",
        ScaledClock(20.0),
        store_addresses=[sc.address for sc in pods.sidecars],
    )


async def run_fleet(fleet: Fleet, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await fleet.step()
        await asyncio.sleep(0.02)


def go(*args: str, timeout: float = 60) -> dict[str, object]:
    out = subprocess.run(
        [str(build_pdclient()), *args], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])  # type: ignore[no-any-return]
