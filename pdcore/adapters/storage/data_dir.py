"""The embedded store's data directory: who may use it, and what it remembers.

* `kubepd.lock` is held with an exclusive `flock` for as long as a LocalStore is open,
  so a second process on the same directory refuses to start instead of serving
  timestamps and ids from the same marks (the lock goes with the process, also on
  kill -9). The file names the holder's pid for the error message.
* `cluster.json` records the cluster id and the ID / TSO high-water marks, written
  after the database commits them. A database that is missing, empty, or older than
  these marks (a deleted `-wal`, a restored old copy) is refused: starting on it would
  hand out ids and timestamps again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_NAME = "kubepd.lock"
MARKS_NAME = "cluster.json"


class DataDirError(Exception):
    """The data directory cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Marks:
    cluster_id: int = 0
    id_mark: int = 0
    tso_window: int = 0


class DataDirLock:
    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"data directory {self.path.parent} is in use by another kubepd process "
                f"(pid {holder}); stop it, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def read_marks(directory: Path) -> Marks | None:
    path = directory / MARKS_NAME
    try:
        data = json.loads(path.read_text())
        return Marks(int(data["cluster_id"]), int(data["id_mark"]), int(data["tso_window"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataDirError(
            f"{path} is damaged ({e}); restore it, or start a new cluster with --force-new-cluster"
        ) from None


def write_marks(directory: Path, marks: Marks) -> None:
    """Atomically replace cluster.json (write, fsync, rename, fsync the directory)."""
    path = directory / MARKS_NAME
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(marks), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def check_database(directory: Path, marks: Marks | None, found: Marks) -> None:
    """Refuse a database that lost what cluster.json says it had committed."""
    if marks is None or marks.cluster_id == 0:
        return
    restart = (
        "Restore kubepd.db (with its -wal file) from a backup, or start a new cluster "
        "with --force-new-cluster (every TiKV must then be wiped)."
    )
    if found.cluster_id == 0:
        raise DataDirError(
            f"data directory {directory} held cluster {marks.cluster_id}, but its database "
            f"is missing or empty; refusing to start a new cluster over it. {restart}"
        )
    if found.cluster_id != marks.cluster_id:
        raise DataDirError(
            f"data directory {directory} held cluster {marks.cluster_id}, but its database "
            f"belongs to cluster {found.cluster_id}. {restart}"
        )
    if found.id_mark < marks.id_mark or found.tso_window < marks.tso_window:
        raise DataDirError(
            f"the database in {directory} is older than what it had committed (id mark "
            f"{found.id_mark} < {marks.id_mark} or tso window {found.tso_window} < "
            f"{marks.tso_window}; was kubepd.db-wal deleted?): serving from it would reuse "
            f"ids or timestamps. {restart}"
        )


def move_aside(directory: Path, names: list[str]) -> list[Path]:
    """--force-new-cluster: keep the old files next to the new ones, renamed."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for name in names:
        src = directory / name
        with contextlib.suppress(FileNotFoundError):
            dst = directory / f"{name}.old-{stamp}"
            src.rename(dst)
            moved.append(dst)
    return moved
