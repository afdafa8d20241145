"""KubeStore: the MetaStore port on custom resources.

Durable marks (cluster id, bootstrap, ID high-water mark, TSO window, GC, config) live
in one `PDMeta` object per cluster; every change is a read-modify-write whose PUT
carries the resourceVersion it read. A 409 means someone else wrote in between: the
object is re-read and the change re-evaluated against the new value — a compare-and-
swap whose `expected` no longer holds raises CasConflict, nothing is ever blindly
overwritten. Stores are `TiKVStore` objects. Regions are not kept here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pdcore.adapters.kube.client import Conflict, KubeClient, NotFound, Obj, crd_path
from pdcore.adapters.storage import serde
from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import AlreadyBootstrapped, CasConflict
from pdcore.domain.gc import GcState
from pdcore.domain.region import Region
from pdcore.domain.store import Store, StoreState
from pdcore.ports import PersistedState

API = "kubepd.io/v1alpha1"
CLUSTER_LABEL = "kubepd.io/cluster"
MAX_CAS_RETRIES = 20
STATE_NAMES = {
    StoreState.UP: "Up",
    StoreState.OFFLINE: "Offline",
    StoreState.TOMBSTONE: "Tombstone",
}

Spec = dict[str, Any]


class KubeStore:
    def __init__(self, client: KubeClient, namespace: str, cluster: str) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.writes = 0
        self.conflicts = 0

    # -- the PDMeta object ------------------------------------------------------------
    @property
    def _meta_path(self) -> str:
        return crd_path(self.namespace, "pdmetas", self.cluster)

    async def _read_meta(self) -> Obj:
        try:
            return await self.client.get(self._meta_path)
        except NotFound:
            body = {
                "apiVersion": API,
                "kind": "PDMeta",
                "metadata": {
                    "name": self.cluster,
                    "namespace": self.namespace,
                    "labels": {CLUSTER_LABEL: self.cluster},
                },
                "spec": {"clusterID": "", "bootstrapped": False, "idMark": "0", "tsoWindow": "0"},
            }
            try:
                self.writes += 1
                return await self.client.create(crd_path(self.namespace, "pdmetas"), body)
            except Conflict:  # created concurrently
                return await self.client.get(self._meta_path)

    async def _update_meta(self, change: Callable[[Spec], Spec | None]) -> Spec:
        """Apply `change` to the freshly read spec and write it with the resourceVersion
        read; on 409 re-read and re-apply. `change` returns None for "nothing to write"
        and may raise (CasConflict, AlreadyBootstrapped) after looking at the new value."""
        for _ in range(MAX_CAS_RETRIES):
            obj = await self._read_meta()
            spec: Spec = obj.get("spec", {})
            new = change(copy.deepcopy(spec))
            if new is None:
                return spec
            obj["spec"] = new
            try:
                self.writes += 1
                await self.client.replace(self._meta_path, obj)
                return new
            except Conflict:
                self.conflicts += 1
        raise CasConflict(f"PDMeta {self.cluster}: too many concurrent writers")

    async def load(self) -> PersistedState:
        spec = (await self._read_meta()).get("spec", {})
        st = PersistedState()
        st.cluster_id = int(spec.get("clusterID") or 0)
        st.meta = serde.meta_from_json(spec["clusterMeta"]) if spec.get("bootstrapped") else None
        st.id_mark = int(spec.get("idMark", "0"))
        st.tso_window = int(spec.get("tsoWindow", "0"))
        st.gc = serde.gc_from_json(spec["gc"]) if spec.get("gc") else GcState()
        st.config = serde.config_from_json(spec["config"]) if spec.get("config") else None
        st.global_config = {k: bytes.fromhex(v) for k, v in spec.get("globalConfig", {}).items()}
        for item in await self.client.list(
            crd_path(self.namespace, "tikvstores"), f"{CLUSTER_LABEL}={self.cluster}"
        ):
            meta = item.get("spec", {}).get("meta")
            if meta:
                s = serde.store_from_json(meta)
                st.stores[s.id] = s
        return st

    async def init_cluster_id(self, candidate: int) -> int:
        def change(spec: Spec) -> Spec | None:
            if spec.get("clusterID"):
                return None
            spec["clusterID"] = str(candidate)
            return spec

        return int((await self._update_meta(change))["clusterID"])

    async def bootstrap(self, meta: ClusterMeta, store: Store, region: Region) -> None:
        spec = (await self._read_meta()).get("spec", {})
        if spec.get("bootstrapped"):
            raise AlreadyBootstrapped()
        await self.save_store(store)

        def change(spec: Spec) -> Spec:
            if spec.get("bootstrapped"):
                raise AlreadyBootstrapped()
            spec["bootstrapped"] = True
            spec["clusterMeta"] = serde.meta_to_json(meta)
            return spec

        await self._update_meta(change)

    async def _cas(self, key: str, expected: int, new: int) -> None:
        def change(spec: Spec) -> Spec:
            current = int(spec.get(key, "0"))
            if current != expected:
                raise CasConflict(f"{key} is {current}, expected {expected}")
            spec[key] = str(new)
            return spec

        await self._update_meta(change)

    async def cas_id_mark(self, expected: int, new: int) -> None:
        await self._cas("idMark", expected, new)

    async def cas_tso_window(self, expected: int, new: int) -> None:
        await self._cas("tsoWindow", expected, new)

    async def _set(self, key: str, value: Any) -> None:
        def change(spec: Spec) -> Spec:
            spec[key] = value
            return spec

        await self._update_meta(change)

    async def save_gc(self, gc: GcState) -> None:
        await self._set("gc", serde.gc_to_json(gc))

    async def save_meta(self, meta: ClusterMeta) -> None:
        await self._set("clusterMeta", serde.meta_to_json(meta))

    async def save_config(self, config: ClusterConfig) -> None:
        await self._set("config", serde.config_to_json(config))

    async def save_global_config(self, items: dict[str, bytes | None]) -> None:
        def change(spec: Spec) -> Spec:
            gc = dict(spec.get("globalConfig", {}))
            for k, v in items.items():
                if v is None:
                    gc.pop(k, None)
                else:
                    gc[k] = v.hex()
            spec["globalConfig"] = gc
            return spec

        await self._update_meta(change)

    # -- stores -------------------------------------------------------------------------
    def _store_name(self, store_id: int) -> str:
        return f"{self.cluster}-store-{store_id}"

    async def save_store(self, store: Store) -> None:
        path = crd_path(self.namespace, "tikvstores", self._store_name(store.id))
        spec = {
            "cluster": self.cluster,
            "storeID": store.id,
            "address": store.address,
            "statusAddress": store.status_address,
            "version": store.version,
            "labels": dict(store.labels),
            "desiredState": "Offline" if store.is_offline else "Up",
            "meta": serde.store_to_json(store),
        }
        for _ in range(MAX_CAS_RETRIES):
            self.writes += 1
            try:
                obj = await self.client.get(path)
            except NotFound:
                body: Obj = {
                    "apiVersion": API,
                    "kind": "TiKVStore",
                    "metadata": {
                        "name": self._store_name(store.id),
                        "namespace": self.namespace,
                        "labels": {CLUSTER_LABEL: self.cluster},
                    },
                    "spec": spec,
                }
                try:
                    obj = await self.client.create(crd_path(self.namespace, "tikvstores"), body)
                except Conflict:
                    continue
            else:
                obj["spec"] = spec
                try:
                    obj = await self.client.replace(path, obj)
                except Conflict:
                    self.conflicts += 1
                    continue
            obj["status"] = {
                "state": STATE_NAMES[store.state],
                "capacity": str(store.stats.capacity),
                "available": str(store.stats.available),
                "regionCount": store.stats.region_count,
            }
            try:
                await self.client.replace(path + "/status", obj)
            except Conflict:
                self.conflicts += 1  # status is advisory; the next save refreshes it
            return
        raise CasConflict(f"TiKVStore {store.id}: too many concurrent writers")

    async def close(self) -> None:
        await self.client.close()
