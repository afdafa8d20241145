"""KubeStore against the real API server: the MetaStore contract, compare-and-swap
that never loses an update, and surviving an API server restart."""

from __future__ import annotations

import asyncio

import pytest

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.kube.client import KubeClient, Unavailable, crd_path
from pdcore.adapters.kube.store import KubeStore
from pdcore.domain.errors import AlreadyBootstrapped, CasConflict
from pdcore.domain.gc import GcState
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store
from pdcore.service.node import Member, PdNode
from tests.support.kubecluster import KubeCluster

REGION = Region(2, b"", b"", RegionEpoch(1, 1), (Peer(3, 1),), leader=Peer(3, 1))


def node(store: KubeStore) -> PdNode:
    return PdNode(
        meta=store,
        region_storage=None,
        clock=SystemClock(),
        member=Member("pd", 1, ("http://127.0.0.1:1",)),
    )


async def test_node_on_kubestore_survives_restart(kube: KubeClient, namespace: str) -> None:
    n = node(KubeStore(kube, namespace, "c1"))
    await n.start()
    await n.bootstrap(Store(1, "tikv-0:20160", version="8.5.0"), REGION)
    await n.put_store(Store(4, "tikv-1:20160", version="8.5.0", labels=(("zone", "b"),)))
    last_id = await n.alloc_id(10)
    ts = await n.tso(1)
    await n.update_gc_safe_point(42)
    await n.stop()
    with pytest.raises(AlreadyBootstrapped):
        await KubeStore(kube, namespace, "c1").bootstrap(n.cluster, Store(9, "x:1"), REGION)  # type: ignore[arg-type]
    again = node(KubeStore(kube, namespace, "c1"))
    await again.start()
    assert again.cluster_id == n.cluster_id and again.is_bootstrapped
    assert {s.id for s in again.stores()} == {1, 4} and again.get_store(4).label("zone") == "b"  # type: ignore[union-attr]
    assert await again.alloc_id(1) > last_id
    assert (await again.tso(1)).compose() > ts.compose()
    assert again.gc.safe_point == 42
    await again.stop()
    stores = await kube.list(crd_path(namespace, "tikvstores"))
    assert sorted(s["spec"]["storeID"] for s in stores) == [1, 4]
    assert {s["status"]["state"] for s in stores} == {"Up"}


async def test_cas_with_a_stale_expectation_is_refused(kube: KubeClient, namespace: str) -> None:
    a, b = KubeStore(kube, namespace, "c2"), KubeStore(kube, namespace, "c2")
    await a.cas_id_mark(0, 1000)
    with pytest.raises(CasConflict):
        await b.cas_id_mark(0, 2000)  # b still believes the mark is 0
    assert (await b.load()).id_mark == 1000


async def test_concurrent_writers_lose_no_update(kube: KubeClient, namespace: str) -> None:
    """Two stores add distinct global-config keys concurrently: every 409 is re-read and
    re-applied, so all 2 x 25 keys survive."""
    stores = [KubeStore(kube, namespace, "c3") for _ in range(2)]
    await stores[0].load()

    async def writer(i: int, s: KubeStore) -> None:
        for j in range(25):
            await s.save_global_config({f"w{i}-{j}": b"x"})

    await asyncio.gather(*(writer(i, s) for i, s in enumerate(stores)))
    loaded = await stores[0].load()
    assert len(loaded.global_config) == 50
    assert sum(s.conflicts for s in stores) > 0  # the race really happened


async def test_api_server_restart_writes_resume(kube_cluster: KubeCluster, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(kube_cluster.kubeconfig)
    store = KubeStore(client, namespace, "c4")
    try:
        await store.save_gc(GcState(safe_point=1))
        kube_cluster.apiserver.terminate()  # type: ignore[union-attr]
        kube_cluster.apiserver.wait()  # type: ignore[union-attr]
        with pytest.raises(Unavailable):
            await store.save_gc(GcState(safe_point=2))
        kube_cluster.start_apiserver()
        await store.save_gc(GcState(safe_point=3))
        assert (await store.load()).gc.safe_point == 3
    finally:
        await client.close()
