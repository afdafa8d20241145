"""LocalStore's data directory: one process at a time, and a database that lost what it
had committed (missing, emptied, older than its marks, garbage) is refused, not reused
as a new cluster; --force-new-cluster starts anew and keeps the old files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pdcore.adapters.storage.data_dir import DataDirError
from pdcore.adapters.storage.local import LocalStore
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store
from tests.unit.test_node import bootstrapped, make_node


async def make_cluster(path: Path) -> int:
    """A bootstrapped cluster that handed out some ids; returns the last id."""
    local = LocalStore(path)
    node = await bootstrapped(local)
    last = await node.alloc_id(5)
    await node.stop()
    await local.close()
    return last


async def test_a_second_handle_on_the_directory_is_refused(tmp_path: Path) -> None:
    first = LocalStore(tmp_path)
    with pytest.raises(
        DataDirError, match=f"in use by another kubepd process \\(pid {os.getpid()}"
    ):
        LocalStore(tmp_path)
    await first.close()
    again = LocalStore(tmp_path)  # released on close
    await again.close()


@pytest.mark.parametrize("damage", ["deleted", "emptied", "garbage"])
async def test_a_missing_or_damaged_database_is_refused(tmp_path: Path, damage: str) -> None:
    await make_cluster(tmp_path)
    db = tmp_path / "kubepd.db"
    if damage == "deleted":
        db.unlink()
    elif damage == "emptied":
        db.write_bytes(b"")
    else:
        db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataDirError, match="--force-new-cluster") as err:
        local = LocalStore(tmp_path)
        try:
            await local.load()
        finally:
            await local.close()
    assert "restore" in str(err.value).lower()
    assert not list(tmp_path.glob("*.old-*"))  # refused: nothing was moved or rewritten


async def test_a_database_older_than_its_marks_is_refused(tmp_path: Path) -> None:
    """kill -9, then kubepd.db-wal lost: the main file holds an older id mark."""
    last = await make_cluster(tmp_path)
    local = LocalStore(tmp_path)
    node = make_node(local)
    await node.start()
    await node.alloc_id(5000)  # a new mark, committed to the WAL only
    copy = tmp_path.parent / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "kubepd.db", copy / "kubepd.db")  # without the -wal
    shutil.copy(tmp_path / "cluster.json", copy / "cluster.json")
    await node.stop()
    await local.close()
    stale = LocalStore(copy)
    with pytest.raises(DataDirError, match="older than what it had committed"):
        await stale.load()
    await stale.close()
    assert last > 0


async def test_force_new_cluster_starts_anew_and_keeps_the_old_files(tmp_path: Path) -> None:
    await make_cluster(tmp_path)
    old_id = await _load_cluster_id(tmp_path)
    (tmp_path / "kubepd.db").unlink()
    local = LocalStore(tmp_path, force_new_cluster=True)
    node = make_node(local)
    await node.start()
    assert node.cluster_id not in (0, old_id) and not node.is_bootstrapped
    await node.stop()
    await local.close()
    assert list(tmp_path.glob("cluster.json.old-*"))
    assert await _load_cluster_id(tmp_path) == node.cluster_id  # and it is remembered


async def _load_cluster_id(path: Path) -> int:
    local = LocalStore(path)
    try:
        return (await local.load()).cluster_id
    finally:
        await local.close()


async def test_ids_above_2_63_are_stored_losslessly(tmp_path: Path) -> None:
    """uint64 ids (PD's type) in SQLite's signed INTEGER keys: nothing stops persisting."""
    big = (1 << 64) - 7
    local = LocalStore(tmp_path)
    node = await bootstrapped(local)
    await node.put_store(Store(big, "127.0.0.1:20170"))
    region = Region(
        big - 1, b"a", b"b", RegionEpoch(1, 1), (Peer(big - 2, 1),), leader=Peer(big - 2, 1)
    )
    node.region_heartbeat(region)
    await node.flush_regions()
    node.region_heartbeat(
        Region(1 << 63, b"b", b"c", RegionEpoch(1, 1), (Peer(9, 1),), leader=Peer(9, 1))
    )
    await node.flush_regions()  # later changes are still saved
    await node.stop()
    await local.close()
    local2 = LocalStore(tmp_path)
    again = make_node(local2)
    await again.start()
    assert again.get_store(big) is not None
    assert again.tree.get(big - 1) is not None and again.tree.get(1 << 63) is not None
    await again.stop()
    await local2.close()
