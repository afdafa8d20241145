from __future__ import annotations

import pytest

from pdcore.domain.errors import StaleRegion
from pdcore.domain.region import Peer, Region, RegionEpoch, validate_region_shape
from pdcore.domain.region_tree import RegionTree


def region(
    rid: int,
    start: bytes,
    end: bytes,
    ver: int = 1,
    conf: int = 1,
    stores: tuple[int, ...] = (1, 2, 3),
    leader_store: int = 1,
    size: int = 10,
) -> Region:
    peers = tuple(Peer(rid * 10 + s, s) for s in stores)
    leader = next(p for p in peers if p.store_id == leader_store)
    return Region(
        rid, start, end, RegionEpoch(conf, ver), peers, leader=leader, approximate_size=size
    )


@pytest.fixture
def tree() -> RegionTree:
    t = RegionTree()
    t.put(region(1, b"", b"m"))
    t.put(region(2, b"m", b"", leader_store=2))
    return t


def test_find_prev_and_scan(tree: RegionTree) -> None:
    assert tree.find(b"a").id == 1  # type: ignore[union-attr]
    assert tree.find(b"m").id == 2  # type: ignore[union-attr]
    assert tree.find(b"zzz").id == 2  # type: ignore[union-attr]
    assert tree.prev(b"q").id == 1  # type: ignore[union-attr]
    assert tree.prev(b"a") is None
    assert [r.id for r in tree.scan(b"c")] == [1, 2]
    assert [r.id for r in tree.scan(b"c", b"m")] == [1]
    assert [r.id for r in tree.scan(b"", limit=1)] == [1]
    assert [r.id for r in tree.scan(b"n")] == [2]


def test_split_replaces_older_overlap(tree: RegionTree) -> None:
    removed = tree.put(region(3, b"", b"f", ver=2))
    assert [r.id for r in removed] == [1]
    tree.put(region(1, b"f", b"m", ver=2))
    assert [(r.id, r.start_key) for r in tree] == [(3, b""), (1, b"f"), (2, b"m")]


def test_stale_heartbeats_are_rejected_without_change(tree: RegionTree) -> None:
    tree.put(region(1, b"", b"m", ver=3, conf=5))
    with pytest.raises(StaleRegion, match="stale"):
        tree.put(region(1, b"", b"m", ver=2, conf=5))
    with pytest.raises(StaleRegion, match="stale"):
        tree.put(region(1, b"", b"m", ver=3, conf=4))
    with pytest.raises(StaleRegion, match="overlaps newer"):
        tree.put(region(9, b"a", b"c", ver=1))
    assert tree.get(1).epoch == RegionEpoch(5, 3)  # type: ignore[union-attr]
    assert tree.get(9) is None


def test_store_counters_follow_moves(tree: RegionTree) -> None:
    assert tree.store_stats(1).leader_count == 1
    assert tree.store_stats(2).leader_count == 1
    assert tree.store_stats(3).region_count == 2
    tree.put(region(1, b"", b"m", conf=2, stores=(1, 2, 4), leader_store=4))
    assert tree.store_stats(1).leader_count == 0
    assert tree.store_stats(4).leader_count == 1
    assert tree.store_stats(3).region_count == 1
    assert tree.store_stats(4).region_size == 10


@pytest.mark.parametrize(
    ("r", "problem"),
    [
        (region(0, b"", b""), "id must not be zero"),
        (region(1, b"z", b"a"), "not below"),
        (region(1, b"a", b"a"), "not below"),
        (Region(1, b"", b"", RegionEpoch(1, 1), ()), "no peers"),
        (Region(1, b"", b"", RegionEpoch(1, 1), (Peer(1, 1), Peer(2, 1))), "two peers on store 1"),
        (Region(1, b"", b"", RegionEpoch(1, 1), (Peer(0, 1),)), "zero id"),
    ],
)
def test_malformed_regions(r: Region, problem: str) -> None:
    assert problem in (validate_region_shape(r) or "")


def test_well_formed_region() -> None:
    assert validate_region_shape(region(1, b"a", b"b")) is None
    assert validate_region_shape(region(1, b"a", b"")) is None
