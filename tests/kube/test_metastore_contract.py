"""One MetaStore contract, three back-ends: the in-memory fake, LocalStore (SQLite) and
KubeStore on the real API server. Each test gets a factory that opens the same durable
storage again, as a restarted process would."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.store import KubeStore
from pdcore.adapters.storage.local import LocalStore
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdcore.domain.errors import AlreadyBootstrapped, CasConflict
from pdcore.domain.gc import GcState, ServiceSafePoint
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import NodeState, Store, StoreState
from pdcore.ports import MetaStore
from pdcore.service.node import Member, PdNode
from tests.support.kubecluster import KubeCluster

REGION = Region(2, b"", b"", RegionEpoch(1, 1), (Peer(3, 1),), leader=Peer(3, 1))
HEARTBEAT_NS = 1_700_000_000 * 10**9  # whole seconds: KubeStore keeps heartbeat times to the second
_ns = itertools.count(1)

Open = Callable[[], MetaStore]


@pytest.fixture(params=["memory", "local", "kube"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Open]:
    if request.param == "memory":
        mem = MemoryStore()
        yield lambda: mem
    elif request.param == "local":
        opened: list[LocalStore] = []

        def open_local() -> MetaStore:
            # Several handles at once stand for racing members: skip the process lock.
            opened.append(LocalStore(tmp_path, exclusive=False))
            return opened[-1]

        yield open_local
        for s in opened:
            await s.close()
    else:
        cluster: KubeCluster = request.getfixturevalue("kube_cluster")
        client = KubeClient.from_kubeconfig(cluster.kubeconfig)
        ns = f"contract-{next(_ns)}"
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        yield lambda: KubeStore(client, ns, "pd")
        await client.close()


async def test_a_new_cluster_is_empty(backend: Open) -> None:
    st = await backend().load()
    assert (st.cluster_id, st.meta, st.stores, st.id_mark, st.tso_window) == (0, None, {}, 0, 0)
    assert st.gc.safe_point == 0 and st.config is None and st.global_config == {}


async def test_the_first_cluster_id_wins(backend: Open) -> None:
    assert await backend().init_cluster_id(77) == 77
    assert await backend().init_cluster_id(88) == 77
    assert (await backend().load()).cluster_id == 77


async def test_bootstrap_once(backend: Open) -> None:
    store = Store(1, "tikv-0:20160", version="8.5.0", labels=(("zone", "a"),))
    await backend().bootstrap(ClusterMeta(77, 3), store, REGION)
    with pytest.raises(AlreadyBootstrapped):
        await backend().bootstrap(ClusterMeta(78, 5), Store(9, "x:1"), REGION)
    st = await backend().load()
    assert st.meta == ClusterMeta(77, 3)
    assert list(st.stores) == [1] and st.stores[1] == store


async def test_stores_are_saved_and_loaded(backend: Open) -> None:
    stores = [
        Store(
            1,
            "tikv-0:20160",
            node_state=NodeState.SERVING,
            labels=(("host", "h0"), ("zone", "a")),
            version="8.5.0",
            peer_address="tikv-0:20160",
            status_address="tikv-0:20180",
            git_hash="abc",
            start_timestamp=1_700_000_000,
            deploy_path="/tikv",
            last_heartbeat_ns=HEARTBEAT_NS,
        ),
        Store(2, "tikv-1:20160", state=StoreState.OFFLINE, node_state=NodeState.REMOVING),
        Store(3, "tikv-2:20160", state=StoreState.TOMBSTONE, node_state=NodeState.REMOVED),
    ]
    for s in stores:
        await backend().save_store(s)
    moved = stores[0].with_(address="tikv-0.new:20160", labels=(("zone", "b"),))
    await backend().save_store(moved)
    loaded = (await backend().load()).stores
    assert loaded == {1: moved, 2: stores[1], 3: stores[2]}
    assert loaded[1].last_heartbeat_ns == HEARTBEAT_NS


async def test_marks_move_by_compare_and_swap(backend: Open) -> None:
    a, b = backend(), backend()
    await a.cas_id_mark(0, 1000)
    await a.cas_tso_window(0, 5000)
    with pytest.raises(CasConflict):
        await b.cas_id_mark(0, 2000)  # b still believes the mark is 0
    with pytest.raises(CasConflict):
        await b.cas_tso_window(4000, 6000)
    await b.cas_id_mark(1000, 2000)
    st = await backend().load()
    assert (st.id_mark, st.tso_window) == (2000, 5000)


async def test_gc_config_and_global_config_persist(backend: Open) -> None:
    gc = GcState(42, {b"cdc": ServiceSafePoint(b"cdc", 40, 1_800_000_000)})
    cfg = ClusterConfig(
        ScheduleConfig(leader_schedule_limit=9, halt_scheduling=True),
        ReplicationConfig(max_replicas=5, location_labels=("zone", "host")),
    )
    s = backend()
    await s.save_gc(gc)
    await s.save_config(cfg)
    await s.save_meta(ClusterMeta(77, 5))
    await s.save_global_config({"a": b"\x00\x01", "b": b"two"})
    await s.save_global_config({"a": None, "c": b""})
    st = await backend().load()
    assert st.gc.safe_point == 42 and st.gc.services[b"cdc"].safe_point == 40
    assert st.config == cfg
    assert st.meta == ClusterMeta(77, 5)
    assert st.global_config == {"b": b"two", "c": b""}


def _node(store: MetaStore) -> PdNode:
    return PdNode(
        meta=store,
        region_storage=None,
        clock=SystemClock(),
        member=Member("pd", 1, ("http://127.0.0.1:1",)),
    )


async def test_a_pd_node_continues_where_it_stopped(backend: Open) -> None:
    """Bootstrap, stores, ids, timestamps and GC survive a restart of the PD node; the
    restarted node allocates above the saved marks."""
    n = _node(backend())
    await n.start()
    await n.bootstrap(Store(1, "tikv-0:20160", version="8.5.0"), REGION)
    await n.put_store(Store(4, "tikv-1:20160", version="8.5.0", labels=(("zone", "b"),)))
    last_id = await n.alloc_id(10)
    ts = await n.tso(1)
    await n.update_gc_safe_point(42)
    await n.stop()
    again = _node(backend())
    await again.start()
    assert again.cluster_id == n.cluster_id and again.is_bootstrapped
    assert {s.id for s in again.stores()} == {1, 4}
    assert again.get_store(4).label("zone") == "b"  # type: ignore[union-attr]
    assert await again.alloc_id(1) > last_id
    assert (await again.tso(1)).compose() > ts.compose()
    assert again.gc.safe_point == 42
    await again.stop()


async def test_keyspaces_persist_and_their_mark_moves_by_compare_and_swap(backend: Open) -> None:
    from pdcore.domain.keyspace import Keyspace, KeyspaceState

    a, b = backend(), backend()
    assert await a.load_keyspaces() == (0, [])
    await a.cas_keyspace_mark(0, 1)
    with pytest.raises(CasConflict):
        await b.cas_keyspace_mark(0, 1)  # b's id 1 would be handed out twice
    one = Keyspace(1, "Tenant_1", created_at=5, state_changed_at=5, config={"k": "v"})
    await a.save_keyspace(Keyspace(0, "DEFAULT", created_at=5, state_changed_at=5))
    await a.save_keyspace(one)
    await b.save_keyspace(one.with_state(KeyspaceState.DISABLED, 9))
    mark, keyspaces = await backend().load_keyspaces()
    assert mark == 1
    assert keyspaces == [
        Keyspace(0, "DEFAULT", created_at=5, state_changed_at=5),
        Keyspace(1, "Tenant_1", KeyspaceState.DISABLED, 5, 9, {"k": "v"}),
    ]
