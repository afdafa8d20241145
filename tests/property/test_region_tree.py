"""Property tests: the RegionTree under random splits, merges, conf changes and stale
heartbeats, checked against a model of the real cluster."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from pdcore.domain.errors import StaleRegion
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.region_tree import RegionTree

KEYS = [bytes([c]) for c in range(ord("b"), ord("y"))]


class Cluster:
    """The truth: a partition of the key space that evolves like TiKV's."""

    def __init__(self) -> None:
        self.next_id = 2
        self.regions: list[Region] = [
            Region(1, b"", b"", RegionEpoch(1, 1), (Peer(11, 1),), leader=Peer(11, 1))
        ]
        self.history: list[Region] = list(self.regions)

    def _record(self, *rs: Region) -> None:
        self.history.extend(rs)

    def split(self, idx: int, key: bytes) -> None:
        r = self.regions[idx % len(self.regions)]
        if not r.contains(key) or key == r.start_key:
            return
        v = r.epoch.version + 1
        left = Region(
            self.next_id,
            r.start_key,
            key,
            RegionEpoch(r.epoch.conf_ver, v),
            r.peers,
            leader=r.leader,
        )
        right = r.with_(start_key=key, epoch=RegionEpoch(r.epoch.conf_ver, v))
        self.next_id += 1
        i = self.regions.index(r)
        self.regions[i : i + 1] = [left, right]
        self._record(left, right)

    def merge(self, idx: int) -> None:
        if len(self.regions) < 2:
            return
        i = idx % (len(self.regions) - 1)
        src, dst = self.regions[i], self.regions[i + 1]
        v = max(src.epoch.version, dst.epoch.version) + 1
        merged = dst.with_(start_key=src.start_key, epoch=RegionEpoch(dst.epoch.conf_ver, v))
        self.regions[i : i + 2] = [merged]
        self._record(merged)

    def conf_change(self, idx: int) -> None:
        i = idx % len(self.regions)
        r = self.regions[i]
        new = r.with_(epoch=RegionEpoch(r.epoch.conf_ver + 1, r.epoch.version))
        self.regions[i] = new
        self._record(new)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("split"), st.integers(0, 50), st.sampled_from(KEYS)),
        st.tuples(st.just("merge"), st.integers(0, 50), st.just(b"")),
        st.tuples(st.just("conf"), st.integers(0, 50), st.just(b"")),
        st.tuples(st.just("fresh"), st.integers(0, 50), st.just(b"")),
        st.tuples(st.just("stale"), st.integers(0, 500), st.just(b"")),
    ),
    max_size=60,
)


def assert_well_formed(tree: RegionTree) -> None:
    regions = list(tree)
    for a, b in itertools.pairwise(regions):
        assert a.end_key and a.end_key <= b.start_key, "regions overlap or are out of order"
    for r in regions:
        assert tree.get(r.id) is r
        assert tree.find(r.start_key) is r


@settings(max_examples=300, deadline=None)
@given(ops)
def test_tree_follows_the_cluster_and_never_goes_back(script: list[tuple[str, int, bytes]]) -> None:
    cluster = Cluster()
    tree = RegionTree()
    tree.put(cluster.regions[0])
    for kind, n, key in script:
        if kind == "split":
            cluster.split(n, key)
        elif kind == "merge":
            cluster.merge(n)
        elif kind == "conf":
            cluster.conf_change(n)
        else:
            region = (
                cluster.regions[n % len(cluster.regions)]
                if kind == "fresh"
                else cluster.history[n % len(cluster.history)]
            )
            before = {r.id: r.epoch for r in tree}
            try:
                tree.put(region)
            except StaleRegion:
                assert {r.id: r.epoch for r in tree} == before, "a rejected put changed state"
            else:
                old = before.get(region.id)
                if old is not None:
                    assert region.epoch.version >= old.version
                    assert region.epoch.conf_ver >= old.conf_ver
        assert_well_formed(tree)
    # Once every current region has reported, PD's view is exactly the truth.
    for region in cluster.regions:
        tree.put(region)
    assert [(r.id, r.start_key, r.end_key, r.epoch) for r in tree] == [
        (r.id, r.start_key, r.end_key, r.epoch) for r in cluster.regions
    ]
    for key in KEYS:
        found = tree.find(key)
        assert found is not None and found.contains(key)
