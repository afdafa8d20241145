"""A store whose TiKV leads no region sends no region heartbeat, only store heartbeats;
its sidecar must still say it serves that store (TiKVStore status.sidecar), or the
operator, which finds a pod's store by it, removes the pod on scale-in without draining
the store. Found by the node suite: freshly scaled-out, empty stores were never drained."""

from __future__ import annotations

import asyncio
import time

from pdcore.adapters.kube import convert, kinds
from pdcore.adapters.kube.client import KubeClient, NotFound
from pdsim.cases import zones
from pdsim.fleet import Fleet
from tests.support.sidecars import Pods


async def test_a_store_without_region_leaders_is_announced_by_its_sidecar(
    pods: Pods, fleet_on: Fleet, kube: KubeClient
) -> None:
    # Stores 0 and 1 lead every region; store 2 (talking to pod tikv-2) holds none. The
    # fleet is not stepped, so PD's commands never run and store 2 never comes to lead.
    await fleet_on.bootstrap(zones(3), [(0, [0, 1]) for _ in range(4)], size_mib=16)
    empty = sorted(fleet_on.stores)[2]
    path = kinds.TIKV_STORES.path(pods.namespace, convert.store_name(pods.name, empty))
    deadline = time.monotonic() + 20
    sidecar: dict[str, str] = {}
    while not sidecar:
        assert time.monotonic() < deadline, f"store {empty} never announced: {sidecar}"
        await asyncio.sleep(0.3)
        try:
            sidecar = ((await kube.get(path)).get("status") or {}).get("sidecar") or {}
        except NotFound:  # the pd-leader has not written the store yet
            continue
    assert sidecar["pod"] == "tikv-2"
