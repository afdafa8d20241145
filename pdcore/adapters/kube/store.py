"""KubeStore: the MetaStore port on custom resources, for one cluster (namespace + name).

Where things go:
* `PDMeta/<cluster>` (spec): cluster id, bootstrap flag with the first store and region,
  ID high-water mark, TSO window, GC state, config, global config. Every change is a
  read-modify-write whose PUT carries the resourceVersion read — a compare-and-swap. A
  409 means someone wrote in between: the object is re-read and the change decided
  again on the new value, so `cas_*` raises CasConflict exactly when the stored value is
  no longer `expected`, and plain saves are re-applied, never lost and never blind.
* `TiKVStore/<cluster>-store-<id>`: the spec is written only when the store's metadata
  changes; the status (state, sizes, counts, heartbeat time) at most once per store per
  `status_interval_s`, at once when the state changes. Heartbeats never touch spec.
* `PlacementRule` objects and the `TiKVCluster`'s schedule/replication config are read
  live through `watch_rules()` and `watch_config()`.
Regions are not kept here: they live in memory and on the sidecar's volume.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.kube import convert, kinds, watching
from pdcore.adapters.kube.client import (
    ApiError,
    Conflict,
    KubeClient,
    NotFound,
    Obj,
    Unavailable,
)
from pdcore.adapters.storage import serde
from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import AlreadyBootstrapped, CasConflict
from pdcore.domain.gc import GcState
from pdcore.domain.keyspace import Keyspace
from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.ports import Clock, PersistedState
from pdcore.scheduling.rules import Rule

log = logging.getLogger("kubepd.kube.store")

Spec = dict[str, Any]
Change = Callable[[Spec], Spec | None]


@dataclass(slots=True)
class _StoreRecord:
    """What we last read or wrote of one TiKVStore, so unchanged specs cost no request."""

    obj: Obj
    status_at: float | None = None  # monotonic time of our last status write
    status: Obj | None = None  # the status we last wrote
    state: int | None = None  # PD's store state when we last wrote the spec


class KubeStore:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        *,
        clock: Clock | None = None,
        status_interval_s: float = 30.0,
        contention_timeout_s: float = 30.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.clock: Clock = clock or SystemClock()
        self.status_interval_s = status_interval_s
        self.contention_timeout_s = contention_timeout_s
        self.writes = 0  # successful writes of any kind
        self.conflicts = 0  # 409s met (and handled)
        self.status_writes = 0
        self.status_skipped = 0  # store status writes held back by the rate bound
        self._meta: Obj | None = None  # last PDMeta read or written: first CAS attempt uses it
        self._stores: dict[int, _StoreRecord] = {}

    # -- the PDMeta object ------------------------------------------------------------
    @property
    def _meta_path(self) -> str:
        return kinds.PD_METAS.path(self.namespace, self.cluster)

    async def _read_meta(self, create: bool) -> Obj | None:
        try:
            obj = await self.client.get(self._meta_path)
        except NotFound:
            if not create:
                return None
            body: Obj = {
                "apiVersion": kinds.API_VERSION,
                "kind": "PDMeta",
                "metadata": {
                    "name": self.cluster,
                    "namespace": self.namespace,
                    "labels": {kinds.CLUSTER_LABEL: self.cluster},
                },
                "spec": {
                    "clusterName": self.cluster,
                    "clusterID": "",
                    "bootstrapped": False,
                    "idMark": "0",
                    "tsoWindow": "0",
                },
            }
            try:
                obj = await self.client.create(kinds.PD_METAS.path(self.namespace), body)
                self.writes += 1
            except Conflict:  # created concurrently by another member
                obj = await self.client.get(self._meta_path)
        self._meta = obj
        return obj

    async def _update_meta(self, change: Change) -> Spec:
        """Apply `change` to the stored spec and write it with the resourceVersion read.

        `change` gets a copy of the spec and returns the new spec, or None for "nothing to
        write"; it may raise (CasConflict, AlreadyBootstrapped) after looking at the value.
        The first attempt may use the cached object; any verdict that ends the call
        without writing is only trusted when taken on a fresh read. A 409 re-reads and
        decides again, after a short random pause so two writers do not keep colliding."""
        deadline = self.clock.monotonic_s() + self.contention_timeout_s
        obj, fresh, attempt = self._meta, False, 0
        while True:
            if obj is None:
                obj, fresh = await self._read_meta(create=True), True
                assert obj is not None
            spec: Spec = obj.get("spec", {})
            try:
                new = change(copy.deepcopy(spec))
            except (CasConflict, AlreadyBootstrapped):
                if fresh:
                    raise
                obj = None
                continue
            if new is None or new == spec:
                if fresh:
                    return spec
                obj = None
                continue
            try:
                self._meta = await self.client.replace(self._meta_path, {**obj, "spec": new})
                self.writes += 1
                return new
            except Conflict:
                self.conflicts += 1
                attempt += 1
                if self.clock.monotonic_s() > deadline:
                    raise Unavailable(
                        409, "Contended", f"PDMeta {self.cluster}: {attempt} conflicts in a row"
                    ) from None
                await asyncio.sleep(random.uniform(0, min(0.25, 0.004 * 2**attempt)))
                obj = None
            except ApiError:
                self._meta = None  # the outcome is unknown: read before the next write
                raise

    async def load(self) -> PersistedState:
        meta = await self._read_meta(create=False)
        spec: Spec = meta.get("spec", {}) if meta else {}
        st = PersistedState()
        st.cluster_id = int(spec.get("clusterID") or 0)
        if spec.get("clusterMeta"):  # as in the other stores: meta present = bootstrapped
            st.meta = serde.meta_from_json(spec["clusterMeta"])
        st.id_mark = int(spec.get("idMark") or 0)
        st.tso_window = int(spec.get("tsoWindow") or 0)
        st.gc = serde.gc_from_json(spec["gc"]) if spec.get("gc") else GcState()
        st.config = serde.config_from_json(spec["config"]) if spec.get("config") else None
        st.global_config = {k: bytes.fromhex(v) for k, v in spec.get("globalConfig", {}).items()}
        listing = await self.client.list_objects(
            kinds.TIKV_STORES.path(self.namespace),
            label_selector=f"{kinds.CLUSTER_LABEL}={self.cluster}",
        )
        for item in listing.items:
            store = convert.store_from_object(item)
            if store is not None:
                st.stores[store.id] = store
                old = self._stores.get(store.id)
                self._stores[store.id] = _StoreRecord(
                    item, old.status_at if old else None, old.status if old else None
                )
        first = spec.get("firstStore") if spec.get("bootstrapped") else None
        if first and int(first["id"]) not in st.stores:
            # Bootstrap wrote PDMeta but its TiKVStore was not created (a crash between).
            store = serde.store_from_json(first)
            st.stores[store.id] = store
        return st

    async def init_cluster_id(self, candidate: int) -> int:
        def change(spec: Spec) -> Spec | None:
            if spec.get("clusterID"):
                return None
            spec["clusterID"] = str(candidate)
            return spec

        return int((await self._update_meta(change))["clusterID"])

    async def bootstrap(self, meta: ClusterMeta, store: Store, region: Region) -> None:
        """One CAS on PDMeta records the flag, the meta, the first store and region
        together; the TiKVStore object follows (load() falls back to `firstStore`)."""
        convert.check_int64_ids(store, region)

        def change(spec: Spec) -> Spec:
            if spec.get("bootstrapped") or spec.get("clusterMeta"):
                raise AlreadyBootstrapped()
            spec["bootstrapped"] = True
            spec["clusterMeta"] = serde.meta_to_json(meta)
            spec["firstStore"] = serde.store_to_json(store)
            spec["firstRegion"] = serde.region_to_json(region)
            return spec

        await self._update_meta(change)
        try:
            await self.save_store(store)
        except ApiError as e:
            log.warning("bootstrapped, but TiKVStore %d not written yet: %s", store.id, e)
        try:
            now = self.clock.now_s()
            cond = convert.condition(
                "Bootstrapped", True, "Bootstrapped", f"first store {store.id}", now, None
            )
            await self.client.patch(self._meta_path + "/status", {"status": {"conditions": [cond]}})
            self.writes += 1
        except ApiError as e:  # status is for people; the flag in spec is what counts
            log.info("PDMeta %s status not written: %s", self.cluster, e)

    async def _cas(self, key: str, expected: int, new: int) -> None:
        def change(spec: Spec) -> Spec:
            current = int(spec.get(key) or 0)
            if current != expected:
                raise CasConflict(f"{key} is {current}, expected {expected}")
            spec[key] = str(new)
            return spec

        await self._update_meta(change)

    async def cas_id_mark(self, expected: int, new: int) -> None:
        await self._cas("idMark", expected, new)

    async def cas_tso_window(self, expected: int, new: int) -> None:
        await self._cas("tsoWindow", expected, new)

    # -- keyspaces: the id mark in PDMeta, one Keyspace object each ---------------------
    async def load_keyspaces(self) -> tuple[int, list[Keyspace]]:
        meta = await self._read_meta(create=False)
        mark = int(((meta or {}).get("spec") or {}).get("keyspaceMark") or 0)
        listing = await self.client.list_objects(
            kinds.KEYSPACES.path(self.namespace),
            label_selector=f"{kinds.CLUSTER_LABEL}={self.cluster}",
        )
        keyspaces = sorted(
            (convert.keyspace_from_object(o) for o in listing.items), key=lambda k: k.id
        )
        return mark, keyspaces

    async def watch_keyspaces(self) -> AsyncGenerator[list[Keyspace], None]:
        """Every keyspace of the cluster, live (how followers keep their view current)."""
        async for objs in watching.follow(
            self.client,
            kinds.KEYSPACES.path(self.namespace),
            label_selector=f"{kinds.CLUSTER_LABEL}={self.cluster}",
        ):
            yield sorted(
                (convert.keyspace_from_object(o) for o in objs.values()), key=lambda k: k.id
            )

    async def cas_keyspace_mark(self, expected: int, new: int) -> None:
        await self._cas("keyspaceMark", expected, new)

    async def save_keyspace(self, keyspace: Keyspace) -> None:
        name = f"{self.cluster}-keyspace-{keyspace.id}"
        path = kinds.KEYSPACES.path(self.namespace, name)
        spec = convert.keyspace_spec(self.cluster, keyspace)
        body: Obj = {
            "apiVersion": kinds.API_VERSION,
            "kind": "Keyspace",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {kinds.CLUSTER_LABEL: self.cluster},
            },
            "spec": spec,
        }
        while True:  # only the pd-leader writes keyspaces: a 409 is a stale read of ours
            try:
                current = await self.client.get(path)
            except NotFound:
                try:
                    await self.client.create(kinds.KEYSPACES.path(self.namespace), body)
                    self.writes += 1
                    return
                except Conflict:
                    continue
            if current.get("spec") == spec:
                return
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                await self.client.replace(path, body)
                self.writes += 1
                return
            except Conflict:
                self.conflicts += 1

    async def _set(self, key: str, value: Any) -> None:
        def change(spec: Spec) -> Spec:
            spec[key] = value
            return spec

        await self._update_meta(change)

    async def save_gc(self, gc: GcState) -> None:
        await self._set("gc", serde.gc_to_json(gc))

    async def save_meta(self, meta: ClusterMeta) -> None:
        def change(spec: Spec) -> Spec:
            spec["clusterMeta"] = serde.meta_to_json(meta)
            spec["bootstrapped"] = True  # meta present means bootstrapped, in every store
            return spec

        await self._update_meta(change)

    async def save_config(self, config: ClusterConfig) -> None:
        await self._set("config", serde.config_to_json(config))

    async def save_global_config(self, items: dict[str, bytes | None]) -> None:
        def change(spec: Spec) -> Spec:
            values = dict(spec.get("globalConfig", {}))
            for k, v in items.items():
                if v is None:
                    values.pop(k, None)
                else:
                    values[k] = v.hex()
            spec["globalConfig"] = values
            return spec

        await self._update_meta(change)

    # -- stores -------------------------------------------------------------------------
    async def _store_record(self, store: Store, spec: Spec) -> _StoreRecord:
        """Our copy of the store's object, read or created if we have none."""
        rec = self._stores.get(store.id)
        if rec is not None:
            return rec
        name = convert.store_name(self.cluster, store.id)
        try:
            obj = await self.client.get(kinds.TIKV_STORES.path(self.namespace, name))
        except NotFound:
            body: Obj = {
                "apiVersion": kinds.API_VERSION,
                "kind": "TiKVStore",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {
                        kinds.CLUSTER_LABEL: self.cluster,
                        kinds.STORE_ID_LABEL: str(store.id),
                    },
                },
                "spec": spec,
            }
            try:
                obj = await self.client.create(kinds.TIKV_STORES.path(self.namespace), body)
                self.writes += 1
            except Conflict:
                obj = await self.client.get(kinds.TIKV_STORES.path(self.namespace, name))
        rec = self._stores[store.id] = _StoreRecord(obj)
        return rec

    def _merged_spec(self, store: Store, rec: _StoreRecord) -> Spec:
        """PD's metadata of the store, keeping what others ask for in the same spec:
        `evictLeaders` always, and a `desiredState` PD has not acted on yet (PD's own
        state has not changed since we last wrote it)."""
        spec = convert.store_spec(self.cluster, store)
        current = rec.obj.get("spec") or {}
        if "evictLeaders" in current:
            spec["evictLeaders"] = current["evictLeaders"]
        if rec.state == int(store.state) and "desiredState" in current:
            spec["desiredState"] = current["desiredState"]
        return spec

    async def save_store(self, store: Store) -> None:
        rec = await self._store_record(store, convert.store_spec(self.cluster, store))
        path = kinds.TIKV_STORES.path(self.namespace, rec.obj["metadata"]["name"])
        deadline = self.clock.monotonic_s() + self.contention_timeout_s
        attempt = 0
        while rec.obj.get("spec") != (spec := self._merged_spec(store, rec)):
            try:
                rec.obj = await self.client.replace(path, {**rec.obj, "spec": spec})
                self.writes += 1
            except Conflict:
                self.conflicts += 1
                attempt += 1
                if self.clock.monotonic_s() > deadline:
                    raise Unavailable(
                        409, "Contended", f"TiKVStore {store.id}: too many conflicts"
                    ) from None
                await asyncio.sleep(random.uniform(0, min(0.25, 0.004 * 2**attempt)))
                rec.obj = await self.client.get(path)
            except ApiError:
                self._stores.pop(store.id, None)  # unknown outcome: read it next time
                raise
        rec.state = int(store.state)
        await self._save_store_status(store, rec, path)

    async def _save_store_status(self, store: Store, rec: _StoreRecord, path: str) -> None:
        """Status is slow-moving and for people: written at most once per interval per
        store, at once when the state changes, never when nothing changed."""
        mono = self.clock.monotonic_s()
        previous = rec.status or rec.obj.get("status") or {}
        status = convert.store_status(store, self.clock.now_s(), previous.get("conditions"))
        if status == previous:
            return
        urgent = convert.status_key(status) != convert.status_key(previous)
        recent = rec.status_at is not None and mono - rec.status_at < self.status_interval_s
        if recent and not urgent:
            self.status_skipped += 1
            return
        try:
            await self.client.patch(path + "/status", {"status": status})
        except ApiError as e:
            log.info("TiKVStore %d status not written: %s", store.id, e)
            return  # advisory: the next save tries again
        rec.status, rec.status_at = status, mono
        self.status_writes += 1
        self.writes += 1

    # -- live config --------------------------------------------------------------------
    async def watch_rules(
        self, report: Callable[[], bool] | None = None
    ) -> AsyncGenerator[list[Rule], None]:
        """The cluster's placement rules (PlacementRule objects with spec.cluster = this
        cluster), now and after every change. An object that is not a valid rule is
        skipped with a warning; while `report()` is true (the pd-leader), each object's
        `Applied` condition is kept up to date (one write per change of verdict)."""
        last: list[Rule] | None = None
        async for objs in watching.follow(
            self.client,
            kinds.PLACEMENT_RULES.path(self.namespace),
            field_selector=f"spec.cluster={self.cluster}",
        ):
            rules: list[Rule] = []
            for name, obj in sorted(objs.items()):
                try:
                    rules.append(convert.rule_from_object(obj))
                    verdict = (True, "Accepted", "the rule is in force")
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("PlacementRule %s ignored: %s", name, e)
                    verdict = (False, "Invalid", str(e))
                if report is not None and report():
                    await self._report_rule(obj, *verdict)
            rules.sort(key=lambda r: (r.group_id, r.index, r.id))
            if rules != last:
                last = rules
                yield list(rules)

    async def _report_rule(self, obj: Obj, ok: bool, reason: str, message: str) -> None:
        status = obj.get("status", {})
        conds = status.get("conditions", [])
        cond = convert.condition("Applied", ok, reason, message, self.clock.now_s(), conds)
        gen = obj["metadata"].get("generation")
        mine = next((c for c in conds if c.get("type") == "Applied"), None)
        if (
            mine is not None
            and status.get("observedGeneration") == gen
            and all(mine.get(k) == cond[k] for k in ("status", "reason", "message"))
        ):
            return
        path = kinds.PLACEMENT_RULES.path(self.namespace, obj["metadata"]["name"], "status")
        try:
            await self.client.patch(
                path, {"status": {"observedGeneration": gen, "conditions": [cond]}}
            )
            self.writes += 1
        except ApiError as e:
            log.info("PlacementRule %s status not written: %s", obj["metadata"]["name"], e)

    async def watch_config(self) -> AsyncGenerator[ClusterConfig, None]:
        """PD's config from the TiKVCluster named like this cluster (spec.schedule in PD's
        dashed keys, spec.replication), now and after every change that alters it."""
        last: ClusterConfig | None = None
        async for objs in watching.follow(
            self.client,
            kinds.TIKV_CLUSTERS.path(self.namespace),
            field_selector=f"metadata.name={self.cluster}",
        ):
            obj = objs.get(self.cluster)
            if obj is None:
                continue
            try:
                cfg = convert.config_from_cluster(obj)
            except ValueError as e:
                log.warning("TiKVCluster %s: config ignored: %s", self.cluster, e)
                continue
            if cfg != last:
                last = cfg
                yield cfg

    async def close(self) -> None:
        """Nothing to release: the client belongs to whoever made it."""
        return None
