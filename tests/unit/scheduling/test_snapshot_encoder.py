"""The incremental snapshot encoder gives exactly the bytes of
`encode_snapshot(build_input(...))` however the regions and operators change between
runs, and encodes again only the regions that changed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pdcore.domain.region import Peer, PeerRole, PeerStats, Region, RegionEpoch
from pdcore.policy.abi import REGION, RegionFlag, encode_snapshot
from pdcore.scheduling.cluster import MemoryCluster
from pdcore.scheduling.controller import OperatorController
from pdcore.scheduling.operator import transfer_leader
from pdcore.scheduling.policy_bridge import SnapshotEncoder, build_input
from tests.unit.scheduling.helpers import NOW, cluster, region, store

STORES = [1, 2, 3, 4, 5]
CONFIG: dict[str, object] = {"batch": 4, "tolerance": 2.5, "zone": "z2"}


def fleet(n: int) -> tuple[MemoryCluster, OperatorController]:
    c = cluster(
        [store(s, zone=f"z{s % 3}") for s in STORES],
        [region(i, [1 + i % 5, 1 + (i + 1) % 5, 1 + (i + 3) % 5]) for i in range(1, n + 1)],
    )
    return c, OperatorController(c)


def reference(
    c: MemoryCluster, ctrl: OperatorController, store_ids: set[int] | None = None
) -> bytes:
    return encode_snapshot(build_input(c, ctrl, NOW, CONFIG, 16, store_ids=store_ids))


def encode(
    enc: SnapshotEncoder,
    c: MemoryCluster,
    ctrl: OperatorController,
    store_ids: set[int] | None = None,
) -> bytes:
    return enc.encode(c, ctrl, NOW, CONFIG, 16, store_ids=store_ids).data


def replaced(old: Region, data: st.DataObject) -> Region:
    """The same region after a heartbeat: new epoch, peers, roles, leader, health."""
    stores = data.draw(st.lists(st.sampled_from(STORES), min_size=1, max_size=5, unique=True))
    roles = data.draw(st.lists(st.sampled_from(PeerRole), min_size=len(stores)))
    peers = tuple(Peer(old.id * 100 + s, s, role) for s, role in zip(stores, roles, strict=False))
    leader = data.draw(st.sampled_from((None, *peers)))
    sick = data.draw(st.sampled_from(("", "down", "pending")))
    return old.with_(
        epoch=RegionEpoch(
            old.epoch.conf_ver + data.draw(st.integers(0, 2)),
            old.epoch.version + data.draw(st.integers(0, 2)),
        ),
        peers=peers,
        leader=leader,
        down_peers=(PeerStats(peers[0], 60),) if sick == "down" else (),
        pending_peers=(peers[-1],) if sick == "pending" else (),
        approximate_size=data.draw(st.integers(0, 1 << 20)),
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_incremental_bytes_equal_a_full_encode_after_any_changes(data: st.DataObject) -> None:
    c, ctrl = fleet(data.draw(st.integers(0, 12), label="regions"))
    enc = SnapshotEncoder()
    next_id = 1000
    for _ in range(data.draw(st.integers(1, 8), label="runs")):
        for _ in range(data.draw(st.integers(0, 6), label="changes")):
            ids = sorted(r.id for r in c.tree)
            action = data.draw(st.sampled_from(("add", "remove", "replace", "same", "op", "done")))
            if action == "add" or not ids:
                next_id += data.draw(st.integers(1, 3))
                c.tree.put(region(next_id, data.draw(st.permutations(STORES))[:3]))
                continue
            rid = data.draw(st.sampled_from(ids))
            old = c.tree.get(rid)
            assert old is not None
            if action == "remove":
                c.tree.remove(rid)
            elif action == "replace":
                c.tree.put(replaced(old, data))
            elif action == "same":  # an equal region in a new object
                c.tree.put_unchecked_stats(old.with_())
            elif action == "op":
                ctrl.running[rid] = transfer_leader(old, old.peers[-1].store_id, "t")
            elif ctrl.running:
                del ctrl.running[data.draw(st.sampled_from(sorted(ctrl.running)))]
        scope = data.draw(st.sampled_from((None, {1}, {2, 3}, set())), label="store_ids")
        assert encode(enc, c, ctrl, scope) == reference(c, ctrl, scope)


def test_only_changed_regions_are_encoded_again() -> None:
    c, ctrl = fleet(50)
    enc = SnapshotEncoder()
    first = encode(enc, c, ctrl)
    assert enc.encoded == 50 and first == reference(c, ctrl)
    assert encode(enc, c, ctrl) == first and enc.encoded == 0

    # A new epoch on region 7 and a fourth peer on region 3 (every later peer_off
    # shifts): both encoded again, the other 48 reused.
    r7, r3 = c.tree.get(7), c.tree.get(3)
    assert r7 is not None and r3 is not None
    c.tree.put(r7.with_(epoch=RegionEpoch(r7.epoch.conf_ver, r7.epoch.version + 1)))
    c.tree.put(
        r3.with_(peers=(*r3.peers, Peer(9999, next(s for s in STORES if s not in r3.store_ids))))
    )
    second = encode(enc, c, ctrl)
    assert enc.encoded == 2
    assert second != first and second == reference(c, ctrl)

    # An operator changes the bytes of its region (HAS_OPERATOR) but encodes nothing.
    r9 = c.tree.get(9)
    assert r9 is not None
    ctrl.running[9] = transfer_leader(r9, r9.peers[1].store_id, "t")
    third = encode(enc, c, ctrl)
    assert enc.encoded == 0 and third != second and third == reference(c, ctrl)
    regions_off = 112 + 40 * len(STORES)
    flags = REGION.unpack_from(third, regions_off + 8 * REGION.size)[5]
    assert flags & RegionFlag.HAS_OPERATOR
    del ctrl.running[9]
    assert encode(enc, c, ctrl) == second

    # Removed regions leave the snapshot and the cache.
    c.tree.remove(1)
    assert encode(enc, c, ctrl) == reference(c, ctrl) and enc.encoded == 0


def test_the_snapshot_remembers_the_leaders_the_policy_saw() -> None:
    c, ctrl = fleet(4)
    enc = SnapshotEncoder()
    snap = enc.encode(c, ctrl, NOW, CONFIG, 16, store_ids={2})
    led = {r.id: r.leader_store_id for r in c.tree if r.leader_store_id == 2}
    assert snap.region_count == len(led) == 1
    assert [snap.leader_of(rid) for rid in (1, 2, 3, 4)] == [
        2 if i in led else 0 for i in (1, 2, 3, 4)
    ]
    r1 = c.tree.get(1)
    assert r1 is not None
    c.tree.put(r1.with_(leader=r1.peers[1]))  # after the run: the snapshot does not change
    assert snap.leader_of(1) == 2
