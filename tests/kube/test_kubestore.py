"""KubeStore on the real API server, beyond the shared MetaStore contract: compare-and-swap
under concurrent writers that never loses an update, the objects it writes (and how
rarely), surviving API server and etcd restarts, and live rules and config."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from pdcore.adapters.kube.client import (
    ApiError,
    Gone,
    KubeClient,
    ObjectList,
    WatchEvent,
    crd_path,
)
from pdcore.adapters.kube.store import KubeStore
from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdcore.domain.errors import CasConflict
from pdcore.domain.gc import GcState
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import NodeState, Store, StoreState, StoreStats
from pdcore.scheduling.rules import LabelConstraint, Rule
from tests.support.clocks import SteppedClock
from tests.support.kubecluster import KubeCluster

REGION = Region(2, b"", b"", RegionEpoch(1, 1), (Peer(3, 1),), leader=Peer(3, 1))


@pytest.fixture
async def two_clients(kube_cluster: KubeCluster) -> AsyncIterator[tuple[KubeClient, KubeClient]]:
    """Two independent connections, like two PD members in two pods."""
    a = KubeClient.from_kubeconfig(kube_cluster.kubeconfig)
    b = KubeClient.from_kubeconfig(kube_cluster.kubeconfig)
    yield a, b
    await a.close()
    await b.close()


# -- compare-and-swap -------------------------------------------------------------------
async def test_a_stale_expectation_is_refused_and_changes_nothing(
    two_clients: tuple[KubeClient, KubeClient], namespace: str
) -> None:
    a, b = (KubeStore(c, namespace, "c") for c in two_clients)
    await a.cas_id_mark(0, 1000)
    await b.load()  # b's cached copy is fresh now
    await a.cas_id_mark(1000, 2000)  # ... and now stale
    with pytest.raises(CasConflict, match="idMark is 2000, expected 1000"):
        await b.cas_id_mark(1000, 3000)
    with pytest.raises(CasConflict):
        await b.cas_tso_window(7, 8)
    st = await b.load()
    assert (st.id_mark, st.tso_window) == (2000, 0)
    assert b.conflicts == 1  # its write with the stale copy met a 409, then it re-read


async def test_two_writers_lose_no_update(
    two_clients: tuple[KubeClient, KubeClient], namespace: str
) -> None:
    """2 writers x 50 mark increments by CAS, plus 2 x 50 config updates and GC saves,
    at the same time on the same PDMeta: every increment lands exactly once, every
    config key is there, and the race really happened (409s were met and re-read)."""
    stores = [KubeStore(c, namespace, "c") for c in two_clients]
    refused = [0, 0]

    async def increment(i: int, s: KubeStore) -> None:
        done = 0
        expected = 0
        while done < 50:
            try:
                await s.cas_id_mark(expected, expected + 1)
                expected += 1
                done += 1
            except CasConflict:
                refused[i] += 1
                expected = (await s.load()).id_mark

    async def configure(i: int, s: KubeStore) -> None:
        for j in range(50):
            await s.save_global_config({f"w{i}-{j}": bytes([j])})
            await s.save_gc(GcState(safe_point=j))

    await asyncio.gather(
        *(increment(i, s) for i, s in enumerate(stores)),
        *(configure(i, s) for i, s in enumerate(stores)),
    )
    st = await KubeStore(two_clients[0], namespace, "c").load()
    assert st.id_mark == 100
    assert st.global_config == {f"w{i}-{j}": bytes([j]) for i in range(2) for j in range(50)}
    assert st.gc.safe_point == 49
    assert sum(s.conflicts for s in stores) > 0 and sum(refused) > 0


async def test_restart_of_the_api_server_loses_nothing(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    """Writes fail while the API server is down and resume after; every acknowledged
    write is there, and a CAS counter never loses or repeats an increment."""
    client = KubeClient.from_kubeconfig(kube_cluster.kubeconfig)
    store = KubeStore(client, namespace, "c")
    acked: list[str] = []
    failed: list[str] = []
    increments = 0
    ambiguous = 0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal increments, ambiguous
        i, mark = 0, 0
        while not stop.is_set():
            key = f"k{i}"
            i += 1
            try:
                await store.save_global_config({key: b"v"})
                acked.append(key)
            except ApiError:
                failed.append(key)
            try:
                await store.cas_id_mark(mark, mark + 1)
                mark += 1
                increments += 1
            except CasConflict:
                mark = (await store.load()).id_mark  # an ambiguous write did land
            except ApiError:
                ambiguous += 1
            await asyncio.sleep(0.05)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(1.0)
        before = len(acked)
        await asyncio.to_thread(kube_cluster.restart_apiserver, 1.0)
        while len(acked) < before + 10:  # writes resume by themselves
            assert not task.done()
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    st = await store.load()
    assert failed, "no write failed: the API server was not down"
    assert set(acked) <= set(st.global_config)
    assert increments <= st.id_mark <= increments + ambiguous
    await client.close()


async def test_restart_of_etcd_loses_nothing(kube_cluster: KubeCluster, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(kube_cluster.kubeconfig)
    store = KubeStore(client, namespace, "c")
    await store.cas_tso_window(0, 100)
    await asyncio.to_thread(kube_cluster.restart_etcd, 0.5)
    for _ in range(100):  # the API server reconnects to etcd
        try:
            await store.cas_tso_window(100, 200)
            break
        except ApiError:
            await asyncio.sleep(0.2)
    assert (await store.load()).tso_window == 200
    await client.close()


# -- what it writes ---------------------------------------------------------------------
async def test_pdmeta_holds_the_marks_as_strings(kube: KubeClient, namespace: str) -> None:
    store = KubeStore(kube, namespace, "c")
    big = 2**64 - 5  # does not fit a JSON number safely
    assert await store.init_cluster_id(big) == big
    await store.bootstrap(ClusterMeta(big, 3), Store(1, "tikv-0:20160"), REGION)
    await store.cas_id_mark(0, 5000)
    await store.cas_tso_window(0, 1_700_000_003_000)
    obj = await kube.get(crd_path(namespace, "pdmetas", "c"))
    spec = obj["spec"]
    assert spec["clusterID"] == str(big) and spec["bootstrapped"] is True
    assert (spec["idMark"], spec["tsoWindow"]) == ("5000", "1700000003000")
    assert spec["firstStore"]["id"] == 1 and spec["firstRegion"]["id"] == 2
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Bootstrapped"]
    assert (await store.load()).cluster_id == big


async def test_bootstrap_store_comes_back_if_its_object_is_missing(
    kube: KubeClient, namespace: str
) -> None:
    """Bootstrap is one write on PDMeta; a crash before the TiKVStore object exists
    leaves the first store recoverable from PDMeta."""
    store = KubeStore(kube, namespace, "c")
    await store.bootstrap(ClusterMeta(7, 3), Store(1, "tikv-0:20160"), REGION)
    await kube.delete(crd_path(namespace, "tikvstores", "c-store-1"))
    assert list((await KubeStore(kube, namespace, "c").load()).stores) == [1]


async def test_store_status_writes_are_bounded(kube: KubeClient, namespace: str) -> None:
    clock = SteppedClock(1_700_000_000.0)
    ks = KubeStore(kube, namespace, "c", clock=clock, status_interval_s=30.0)
    s = Store(
        1,
        "tikv-0:20160",
        node_state=NodeState.SERVING,
        labels=(("zone", "a"),),
        last_heartbeat_ns=int(clock.t) * 10**9,
        stats=StoreStats(capacity=2**40, available=2**39, region_count=10),
    )
    await ks.save_store(s)
    writes = ks.writes
    path = crd_path(namespace, "tikvstores", "c-store-1")
    obj = await kube.get(path)
    assert obj["spec"]["labels"] == {"zone": "a"} and obj["spec"]["desiredState"] == "Up"
    assert obj["metadata"]["labels"] == {"kubepd.io/cluster": "c", "kubepd.io/store-id": "1"}
    st = obj["status"]
    assert (st["state"], st["nodeState"], st["capacity"], st["available"]) == (
        "Up",
        "Serving",
        "1Ti",
        "512Gi",
    )
    assert st["regionCount"] == 10 and st["lastHeartbeat"] == "2023-11-14T22:13:20Z"
    assert st["conditions"][0]["type"] == "Ready" and st["conditions"][0]["status"] == "True"

    # Heartbeats every 10 s for 20 s: nothing is written (spec unchanged, status held back).
    for i in range(1, 3):
        clock.t += 10
        await ks.save_store(
            s.with_(last_heartbeat_ns=int(clock.t) * 10**9, stats=StoreStats(region_count=10 + i))
        )
    assert ks.writes == writes and ks.status_skipped == 2
    # After 30 s the status is refreshed, once.
    clock.t += 10
    await ks.save_store(s.with_(last_heartbeat_ns=int(clock.t) * 10**9))
    assert ks.writes == writes + 1
    # A state change is written at once, spec and status.
    clock.t += 1
    await ks.save_store(s.with_state(StoreState.OFFLINE))
    assert ks.writes == writes + 3
    obj = await kube.get(path)
    assert obj["spec"]["desiredState"] == "Offline" and obj["status"]["state"] == "Offline"
    ready = obj["status"]["conditions"][0]
    assert ready["status"] == "False" and ready["reason"] == "Removing"


async def test_a_label_edit_by_someone_else_is_not_a_lost_update(
    kube: KubeClient, namespace: str
) -> None:
    """PD's write after a concurrent edit meets a 409, re-reads, and writes PD's view
    on top of the new version (never with a stale resourceVersion)."""
    ks = KubeStore(kube, namespace, "c")
    s = Store(1, "tikv-0:20160")
    await ks.save_store(s)
    path = crd_path(namespace, "tikvstores", "c-store-1")
    await kube.patch(path, {"metadata": {"annotations": {"note": "by hand"}}})
    await ks.save_store(s.with_(labels=(("zone", "z"),)))
    obj = await kube.get(path)
    assert obj["spec"]["labels"] == {"zone": "z"} and obj["metadata"]["annotations"]["note"]
    assert ks.conflicts == 1


# -- live rules and config --------------------------------------------------------------
async def _next(gen: AsyncGenerator[Any, None]) -> Any:
    return await asyncio.wait_for(anext(gen), 15)


def _rule(name: str, cluster: str = "c", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubepd.io/v1alpha1",
        "kind": "PlacementRule",
        "metadata": {"name": name},
        "spec": {"cluster": cluster, "role": "voter", "count": 3, **spec},
    }


async def test_rules_are_delivered_live(kube: KubeClient, namespace: str) -> None:
    ks = KubeStore(kube, namespace, "c")
    path = crd_path(namespace, "placementrules")
    await kube.create(path, _rule("base"))
    rules = ks.watch_rules(report=lambda: True)
    try:
        assert await _next(rules) == [Rule(id="base")]
        await kube.create(path, _rule("other-cluster", cluster="d"))
        await kube.create(
            path,
            _rule(
                "learners",
                groupID="tiflash",
                role="learner",
                count=1,
                startKey="74",
                labelConstraints=[{"key": "engine", "op": "in", "values": ["tiflash"]}],
            ),
        )
        learners = Rule(
            group_id="tiflash",
            id="learners",
            role="learner",
            count=1,
            start_key=b"t",
            label_constraints=(LabelConstraint("engine", "in", ("tiflash",)),),
        )
        assert await _next(rules) == [Rule(id="base"), learners]
        await kube.patch(f"{path}/base", {"spec": {"count": 5}})
        assert await _next(rules) == [Rule(id="base", count=5), learners]
        await kube.delete(f"{path}/learners")
        assert await _next(rules) == [Rule(id="base", count=5)]
    finally:
        await rules.aclose()
    base = await kube.get(f"{path}/base")
    applied = base["status"]["conditions"][0]
    assert (applied["type"], applied["status"], applied["reason"]) == (
        "Applied",
        "True",
        "Accepted",
    )
    assert base["status"]["observedGeneration"] == base["metadata"]["generation"]
    assert "status" not in await kube.get(f"{path}/other-cluster")


class GoneOnce(KubeClient):
    """The real client, except that its first watch finds its resourceVersion compacted."""

    lists = 0
    gone = 1

    async def list_objects(self, path: str, **kw: Any) -> ObjectList:
        self.lists += 1
        return await super().list_objects(path, **kw)

    async def watch(  # type: ignore[override]
        self, path: str, resource_version: str, **kw: Any
    ) -> AsyncGenerator[WatchEvent, None]:
        if self.gone:
            self.gone -= 1
            raise Gone(410, "Expired", f"too old resource version: {resource_version}")
        async for ev in super().watch(path, resource_version, **kw):
            yield ev


async def test_a_watch_that_is_gone_lists_again(kube_cluster: KubeCluster, namespace: str) -> None:
    client = GoneOnce(KubeClient.from_kubeconfig(kube_cluster.kubeconfig).creds)
    ks = KubeStore(client, namespace, "c")
    rules = ks.watch_rules()
    try:
        assert await _next(rules) == []
        await client.create(crd_path(namespace, "placementrules"), _rule("r"))
        assert await _next(rules) == [Rule(id="r")]
        assert client.lists == 2
    finally:
        await rules.aclose()
        await client.close()


async def test_the_real_server_says_gone_for_a_compacted_version(
    kube: KubeClient, namespace: str
) -> None:
    with pytest.raises(Gone, match="too old resource version"):
        async for _ in kube.watch(crd_path(namespace, "placementrules"), "1", timeout_s=5):
            pass


async def test_config_is_delivered_live(kube: KubeClient, namespace: str) -> None:
    ks = KubeStore(kube, namespace, "c")
    path = crd_path(namespace, "tikvclusters")
    configs = ks.watch_config()
    first = asyncio.ensure_future(_next(configs))
    try:
        await asyncio.sleep(0.5)
        assert not first.done()  # no TiKVCluster yet: nothing to deliver
        await kube.create(
            path,
            {
                "apiVersion": "kubepd.io/v1alpha1",
                "kind": "TiKVCluster",
                "metadata": {"name": "c"},
                "spec": {
                    "replicas": 3,
                    "image": "tikv",
                    "schedule": {"leader-schedule-limit": 8, "max-store-down-time-s": 600},
                    "replication": {"maxReplicas": 3, "locationLabels": ["zone"]},
                },
            },
        )
        cfg = await first
        assert cfg == ClusterConfig(
            ScheduleConfig(leader_schedule_limit=8, max_store_down_time_s=600.0),
            ReplicationConfig(max_replicas=3, location_labels=("zone",)),
        )
        await kube.patch(f"{path}/c/status", {"status": {"phase": "Running"}})  # not config
        await kube.patch(f"{path}/c", {"spec": {"schedule": {"halt-scheduling": True}}})
        cfg = await _next(configs)
        assert cfg.schedule.halt_scheduling and cfg.schedule.leader_schedule_limit == 8
    finally:
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        await configs.aclose()
