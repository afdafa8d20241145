"""LocalStore: the embedded MetaStore and RegionStorage, one SQLite file under --data-dir.

WAL journal with synchronous=FULL: a mark (ID high-water, TSO window) is on disk before
any id or timestamp below it is handed out, and a crash leaves either the old or the
new value, never a torn one. Calls run in a worker thread so the event loop never
waits on fsync. The directory is locked for one process, and a database that lost
committed marks is refused (see data_dir).

Ids are uint64 on the wire; SQLite's INTEGER is signed 64-bit, so row keys hold the
two's-complement reinterpretation (`_row`) and the JSON bodies the real value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pdcore.adapters.storage import serde
from pdcore.adapters.storage.data_dir import (
    DataDirError,
    DataDirLock,
    Marks,
    check_database,
    move_aside,
    read_marks,
    write_marks,
)
from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import AlreadyBootstrapped, CasConflict, StorageFailed
from pdcore.domain.gc import GcState
from pdcore.domain.keyspace import Keyspace
from pdcore.domain.mvcc import KeyValue, Record
from pdcore.domain.region import Region
from pdcore.domain.store import Store
from pdcore.ports import EtcdChange, EtcdState, PersistedState
from pdcore.scheduling.rule_config import RuleSet

T = TypeVar("T")
log = logging.getLogger("kubepd.storage")
FILE_NAME = "kubepd.db"
_DB_FILES = [FILE_NAME, f"{FILE_NAME}-wal", f"{FILE_NAME}-shm"]
_U64 = 1 << 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stores (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS regions (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS global_config (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keyspaces (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS etcd_records (
    revision INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL,
    create_revision INTEGER NOT NULL, version INTEGER NOT NULL, value BLOB NOT NULL,
    lease INTEGER NOT NULL, tombstone INTEGER NOT NULL, PRIMARY KEY (revision, sub));
CREATE TABLE IF NOT EXISTS etcd_leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);
"""


def _record_row(r: Record) -> tuple[object, ...]:
    kv = r.kv
    return (
        r.revision,
        r.sub,
        kv.key,
        kv.create_revision,
        kv.version,
        kv.value,
        kv.lease,
        r.tombstone,
    )


def _row(id_: int) -> int:
    """A uint64 id as the signed 64-bit row key SQLite can hold (lossless)."""
    return id_ - _U64 if id_ >= 1 << 63 else id_


class LocalStore:
    def __init__(
        self, data_dir: str | Path, *, exclusive: bool = True, force_new_cluster: bool = False
    ) -> None:
        """`exclusive=False` skips the directory lock: only for tests that open two
        handles on purpose. `force_new_cluster` moves an existing database aside."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.dir = path
        self.path = path / FILE_NAME
        self._dir_lock = DataDirLock(path) if exclusive else None
        if self._dir_lock is not None:
            self._dir_lock.acquire()
        try:
            if force_new_cluster:
                moved = move_aside(path, [*_DB_FILES, "cluster.json"])
                if moved:
                    log.warning("starting a new cluster; old files kept as %s", moved)
            elif not self.path.exists():
                # Refuse before sqlite creates an empty file in its place.
                check_database(path, read_marks(path), Marks())
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._release()
            raise DataDirError(
                f"cannot open {self.path}: {e}; restore it from a backup, or start a new "
                "cluster with --force-new-cluster"
            ) from None
        except BaseException:
            self._release()
            raise
        self._lock = threading.Lock()

    def _release(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.release()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return fn(self._db)
                except (sqlite3.OperationalError, OSError) as e:
                    # e.g. "database or disk is full": a PD error for the client, not a crash.
                    raise StorageFailed(f"storage write failed in {self.dir}: {e}") from e

        return await asyncio.to_thread(locked)

    def _record_marks(self, db: sqlite3.Connection) -> None:
        """After a commit: cluster.json follows the database (never ahead of it)."""
        write_marks(
            self.dir,
            Marks(
                int(self._get(db, "cluster_id") or 0),
                int(self._get(db, "id_mark") or 0),
                int(self._get(db, "tso_window") or 0),
            ),
        )

    @staticmethod
    def _get(db: sqlite3.Connection, key: str) -> Any:
        row = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    @staticmethod
    def _put(db: sqlite3.Connection, key: str, value: Any) -> None:
        db.execute(
            "INSERT INTO kv(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    async def load(self) -> PersistedState:
        def read(db: sqlite3.Connection) -> PersistedState:
            st = PersistedState()
            st.cluster_id = int(self._get(db, "cluster_id") or 0)
            meta = self._get(db, "meta")
            st.meta = serde.meta_from_json(meta) if meta else None
            st.id_mark = int(self._get(db, "id_mark") or 0)
            st.tso_window = int(self._get(db, "tso_window") or 0)
            gc = self._get(db, "gc")
            st.gc = serde.gc_from_json(gc) if gc else GcState()
            cfg = self._get(db, "config")
            st.config = serde.config_from_json(cfg) if cfg else None
            for (body,) in db.execute("SELECT body FROM stores"):
                s = serde.store_from_json(json.loads(body))
                st.stores[s.id] = s
            for name, value in db.execute("SELECT name, value FROM global_config"):
                st.global_config[name] = bytes(value)
            marks = read_marks(self.dir)
            check_database(self.dir, marks, Marks(st.cluster_id, st.id_mark, st.tso_window))
            if st.cluster_id and marks is None:
                self._record_marks(db)  # a directory from before cluster.json existed
            return st

        try:
            return await self._run(read)
        except sqlite3.DatabaseError as e:
            raise DataDirError(
                f"the database {self.path} is damaged ({e}); restore it from a backup, or "
                "start a new cluster with --force-new-cluster"
            ) from None

    async def init_cluster_id(self, candidate: int) -> int:
        def write(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                current = self._get(db, "cluster_id")
                if current:
                    return int(current)
                self._put(db, "cluster_id", candidate)
            self._record_marks(db)
            return candidate

        return await self._run(write)

    async def bootstrap(self, meta: ClusterMeta, store: Store, region: Region) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                if self._get(db, "meta") is not None:
                    raise AlreadyBootstrapped()
                self._put(db, "meta", serde.meta_to_json(meta))
                db.execute(
                    "INSERT OR REPLACE INTO stores(id, body) VALUES(?, ?)",
                    (_row(store.id), json.dumps(serde.store_to_json(store))),
                )
                db.execute(
                    "INSERT OR REPLACE INTO regions(id, body) VALUES(?, ?)",
                    (_row(region.id), json.dumps(serde.region_to_json(region))),
                )

        await self._run(write)

    async def save_store(self, store: Store) -> None:
        body = json.dumps(serde.store_to_json(store))

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO stores(id, body) VALUES(?, ?)", (_row(store.id), body)
                )

        await self._run(write)

    async def _cas(self, key: str, expected: int, new: int) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                current = int(self._get(db, key) or 0)
                if current != expected:
                    raise CasConflict(f"{key} is {current}, expected {expected}")
                self._put(db, key, new)
            self._record_marks(db)

        await self._run(write)

    async def cas_id_mark(self, expected: int, new: int) -> None:
        await self._cas("id_mark", expected, new)

    async def cas_tso_window(self, expected: int, new: int) -> None:
        await self._cas("tso_window", expected, new)

    async def _save(self, key: str, value: Any) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                self._put(db, key, value)

        await self._run(write)

    async def save_gc(self, gc: GcState) -> None:
        await self._save("gc", serde.gc_to_json(gc))

    async def save_meta(self, meta: ClusterMeta) -> None:
        await self._save("meta", serde.meta_to_json(meta))

    async def save_config(self, config: ClusterConfig) -> None:
        await self._save("config", serde.config_to_json(config))

    async def save_global_config(self, items: dict[str, bytes | None]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                for name, value in items.items():
                    if value is None:
                        db.execute("DELETE FROM global_config WHERE name=?", (name,))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO global_config(name, value) VALUES(?, ?)",
                            (name, value),
                        )

        await self._run(write)

    async def load_keyspaces(self) -> tuple[int, list[Keyspace]]:
        def read(db: sqlite3.Connection) -> tuple[int, list[Keyspace]]:
            rows = db.execute("SELECT body FROM keyspaces ORDER BY id")
            keyspaces = [serde.keyspace_from_json(json.loads(body)) for (body,) in rows]
            return int(self._get(db, "keyspace_mark") or 0), keyspaces

        return await self._run(read)

    async def cas_keyspace_mark(self, expected: int, new: int) -> None:
        await self._cas("keyspace_mark", expected, new)

    async def save_keyspace(self, keyspace: Keyspace) -> None:
        body = json.dumps(serde.keyspace_to_json(keyspace))

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO keyspaces(id, body) VALUES(?, ?)", (keyspace.id, body)
                )

        await self._run(write)

    async def load_rules(self) -> RuleSet | None:
        def read(db: sqlite3.Connection) -> RuleSet | None:
            data = self._get(db, "placement_rules")
            return None if data is None else serde.rules_from_json(data)

        return await self._run(read)

    async def save_rules(self, rules: RuleSet) -> None:
        await self._save("placement_rules", serde.rules_to_json(rules))

    async def load_etcd(self) -> EtcdState:
        def read(db: sqlite3.Connection) -> EtcdState:
            st = EtcdState(
                revision=int(self._get(db, "etcd_revision") or 0),
                compact_revision=int(self._get(db, "etcd_compact_revision") or 0),
            )
            for rev, sub, key, create, version, value, lease, tomb in db.execute(
                "SELECT revision, sub, key, create_revision, version, value, lease, tombstone "
                "FROM etcd_records ORDER BY revision, sub"
            ):
                kv = KeyValue(bytes(key), create, rev, version, bytes(value), lease)
                st.records.append(Record(rev, sub, kv, bool(tomb)))
            st.leases = dict(db.execute("SELECT id, ttl FROM etcd_leases"))
            return st

        return await self._run(read)

    async def save_etcd(self, change: EtcdChange) -> None:
        rows = [_record_row(r) for r in change.added]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO etcd_records VALUES(?,?,?,?,?,?,?,?)", rows)
                db.executemany(
                    "DELETE FROM etcd_records WHERE revision=? AND sub=?", change.dropped
                )
                db.executemany(
                    "INSERT OR REPLACE INTO etcd_leases(id, ttl) VALUES(?, ?)",
                    change.leases_granted.items(),
                )
                db.executemany(
                    "DELETE FROM etcd_leases WHERE id=?", [(i,) for i in change.leases_revoked]
                )
                self._put(db, "etcd_revision", change.revision)
                if change.compact_revision is not None:
                    self._put(db, "etcd_compact_revision", change.compact_revision)

        await self._run(write)

    async def load_regions(self) -> list[Region]:
        def read(db: sqlite3.Connection) -> list[Region]:
            return [
                serde.region_from_json(json.loads(body))
                for (body,) in db.execute("SELECT body FROM regions")
            ]

        return await self._run(read)

    async def save_regions(self, changed: Sequence[Region], deleted: Iterable[int]) -> None:
        rows = [(_row(r.id), json.dumps(serde.region_to_json(r))) for r in changed]
        gone = [(_row(rid),) for rid in deleted]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany("DELETE FROM regions WHERE id=?", gone)
                db.executemany("INSERT OR REPLACE INTO regions(id, body) VALUES(?, ?)", rows)

        await self._run(write)

    async def close(self) -> None:
        def close(db: sqlite3.Connection) -> None:
            db.close()

        try:
            await self._run(close)
        finally:
            self._release()
