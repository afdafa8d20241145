"""KubeEtcdStore: the etcd API's EtcdStore port on ConfigMaps, for one cluster.

Layout (all labelled `kubepd.io/cluster=<cluster>`, `kubepd.io/etcd=...`):
* `<cluster>-etcd` (`meta`): revision, compact revision and leases (id -> TTL).
* `<cluster>-etcd-<seq>` (`segment`): an append-only log segment; each record is one
  data entry `r<revision>.<sub>` holding JSON [key, create rev, version, value, lease,
  tombstone] (key and value base64). A write's records always go into one segment, in
  one request. A new segment starts when the current one would pass SEGMENT_BYTES
  (the API server rewrites, and returns, the whole object on every append, so segments
  stay small); the full one is marked `sealed` first.
Every write carries the resourceVersion last seen, so a deposed pd-leader's write fails
(409) instead of interleaving; it surfaces as NotLeader.

Limits: one write (a Put, or all changes of a Txn) may hold at most WRITE_BYTES
(768 KiB encoded, about 560 KiB of keys and values: a ConfigMap holds 1 MiB); the store
at most MAX_SEGMENTS segments (about 32 MiB of records, history included). Past either,
the write is refused and changes nothing.

A change spanning objects is ordered so that a crash in between is harmless: a
compaction raises the compact revision in `meta` before it deletes records (left-over
records are dropped again next time); a revoke deletes the keys before the lease.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import Conflict, KubeClient, NotFound, Obj
from pdcore.domain.errors import NotLeader
from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.domain.mvcc import KeyValue, Record
from pdcore.ports import EtcdChange, EtcdState

WRITE_BYTES = 768 * 1024  # one write's records, encoded (a ConfigMap holds 1 MiB)
SEGMENT_BYTES = 64 * 1024  # a segment is sealed once this full: each append rewrites it
MAX_SEGMENTS = 512
ROLE_LABEL = "kubepd.io/etcd"
SEALED = "sealed"  # data entry of a full segment


def _entry(r: Record) -> tuple[str, str]:
    kv = r.kv
    body = [
        base64.b64encode(kv.key).decode(),
        kv.create_revision,
        kv.version,
        base64.b64encode(kv.value).decode(),
        kv.lease,
        int(r.tombstone),
    ]
    return f"r{r.revision}.{r.sub}", json.dumps(body, separators=(",", ":"))


def _record(name: str, text: str) -> Record:
    rev, sub = (int(x) for x in name[1:].split("."))
    key, create, version, value, lease, tomb = json.loads(text)
    kv = KeyValue(base64.b64decode(key), create, rev, version, base64.b64decode(value), lease)
    return Record(rev, sub, kv, bool(tomb))


def _size(data: dict[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in data.items())


class KubeEtcdStore:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        *,
        write_bytes: int = WRITE_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
        max_segments: int = MAX_SEGMENTS,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.write_bytes = write_bytes
        self.segment_bytes = segment_bytes
        self.max_segments = max_segments
        self.writes = 0
        self._meta: Obj | None = None
        self._segments: dict[int, Obj] = {}  # seq -> last object read or written
        self._where: dict[tuple[int, int], int] = {}  # (rev, sub) -> segment seq

    # -- names ---------------------------------------------------------------------
    @property
    def _base(self) -> str:
        return kinds.CONFIG_MAPS.path(self.namespace)

    def _name(self, seq: int | None = None) -> str:
        return f"{self.cluster}-etcd" if seq is None else f"{self.cluster}-etcd-{seq:06d}"

    def _body(self, seq: int | None, data: dict[str, str]) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self._name(seq),
                "namespace": self.namespace,
                "labels": {
                    kinds.CLUSTER_LABEL: self.cluster,
                    ROLE_LABEL: "meta" if seq is None else "segment",
                },
            },
            "data": data,
        }

    # -- load --------------------------------------------------------------------------
    async def load_etcd(self) -> EtcdState:
        selector = f"{kinds.CLUSTER_LABEL}={self.cluster},{ROLE_LABEL}"
        objs = await self.client.list(self._base, label_selector=selector)
        st = EtcdState()
        self._meta, self._segments, self._where = None, {}, {}
        for obj in objs:
            name = obj["metadata"]["name"]
            data = obj.get("data") or {}
            if name == self._name():
                self._meta = obj
                st.revision = int(data.get("revision", "0"))
                st.compact_revision = int(data.get("compactRevision", "0"))
                st.leases = {
                    int(k): int(v) for k, v in json.loads(data.get("leases", "{}")).items()
                }
                continue
            seq = int(name.rsplit("-", 1)[1])
            self._segments[seq] = obj
            for entry, text in data.items():
                if entry == SEALED:
                    continue
                rec = _record(entry, text)
                self._where[(rec.revision, rec.sub)] = seq
                st.records.append(rec)
        return st

    # -- writes --------------------------------------------------------------------------
    async def save_etcd(self, change: EtcdChange) -> None:
        if change.compact_revision is not None or change.leases_granted:
            # Raise the compact mark (and grant leases) before records go.
            await self._save_meta(change, with_revoked=False)
        if change.added:
            await self._append(change.added)
        if change.dropped:
            await self._drop(change.dropped)
        if change.leases_revoked:
            await self._save_meta(change, with_revoked=True)

    async def _append(self, records: Any) -> None:
        entries = dict(_entry(r) for r in records)
        size = _size(entries)
        if size > self.write_bytes:
            raise EtcdError(
                EtcdErrorKind.REQUEST_TOO_LARGE,
                f"on Kubernetes one write holds at most {self.write_bytes // 1024} KiB encoded",
            )
        seq = max(self._segments, default=0)
        current = self._segments.get(seq)
        if current is None or _size(current.get("data") or {}) + size > self.segment_bytes:
            if len(self._segments) >= self.max_segments:
                raise EtcdError(
                    EtcdErrorKind.NO_SPACE,
                    f"on Kubernetes the etcd API keeps at most {self.max_segments} segments "
                    f"of {self.segment_bytes // 1024} KiB or one write; compact or delete keys",
                )
            if current is not None:
                # Seal the full segment first: its resourceVersion check is the fence
                # against a deposed leader that would append to either segment.
                seal = {"metadata": {"resourceVersion": _rv(current)}, "data": {SEALED: "true"}}
                self._segments[seq] = await self._write(self.client.patch(self._path(seq), seal))
            seq += 1
            obj = await self._write(self.client.create(self._base, self._body(seq, entries)))
        else:
            patch = {"metadata": {"resourceVersion": _rv(current)}, "data": entries}
            obj = await self._write(self.client.patch(self._path(seq), patch))
        self._segments[seq] = obj
        for r in records:
            self._where[(r.revision, r.sub)] = seq

    async def _drop(self, dropped: Any) -> None:
        by_segment: dict[int, list[str]] = defaultdict(list)
        for rev, sub in dropped:
            seq = self._where.pop((rev, sub), None)
            if seq is not None:
                by_segment[seq].append(f"r{rev}.{sub}")
        newest = max(self._segments, default=0)
        for seq, names in sorted(by_segment.items()):
            obj = self._segments[seq]
            left = set(obj.get("data") or {}) - set(names) - {SEALED}
            if not left and seq != newest:
                await self._write(self.client.delete(self._path(seq)), missing_ok=True)
                del self._segments[seq]
                continue
            patch = {
                "metadata": {"resourceVersion": _rv(obj)},
                "data": dict.fromkeys(names),  # null removes an entry
            }
            self._segments[seq] = await self._write(self.client.patch(self._path(seq), patch))

    async def _save_meta(self, change: EtcdChange, *, with_revoked: bool) -> None:
        data = dict((self._meta or {}).get("data") or {})
        leases = json.loads(data.get("leases", "{}"))
        if with_revoked:
            for lease_id in change.leases_revoked:
                leases.pop(str(lease_id), None)
        else:
            leases.update({str(k): v for k, v in change.leases_granted.items()})
        data["leases"] = json.dumps(leases, sort_keys=True)
        data["revision"] = str(max(change.revision, int(data.get("revision", "0"))))
        if change.compact_revision is not None:
            data["compactRevision"] = str(change.compact_revision)
        if self._meta is None:
            self._meta = await self._write(self.client.create(self._base, self._body(None, data)))
        else:
            body = {"metadata": {"resourceVersion": _rv(self._meta)}, "data": data}
            self._meta = await self._write(self.client.patch(self._path(None), body))

    def _path(self, seq: int | None) -> str:
        return kinds.CONFIG_MAPS.path(self.namespace, self._name(seq))

    async def _write(self, call: Any, missing_ok: bool = False) -> Obj:
        try:
            obj: Obj = await call
        except Conflict:
            raise NotLeader("the etcd data was written by another member") from None
        except NotFound:
            if not missing_ok:
                raise NotLeader("the etcd data was changed by another member") from None
            obj = {}
        self.writes += 1
        return obj


def _rv(obj: Obj) -> str:
    return str(obj["metadata"]["resourceVersion"])
