"""The simulated TiKV changes epochs exactly as TiKV does."""

from __future__ import annotations

from pdcore.domain.region import Peer, PeerRole
from pdsim.fleet import _midpoint
from pdsim.model import SimRegion


def region() -> SimRegion:
    return SimRegion(
        1, b"a", b"z", [Peer(11, 1), Peer(12, 2), Peer(13, 3)], leader_id=11, conf_ver=3, version=5
    )


def test_conf_changes_bump_conf_ver_only() -> None:
    r = region()
    assert r.add_learner(Peer(14, 4)) and r.epoch() == (4, 5) and 14 in r.pending
    assert not r.add_learner(Peer(15, 4))  # one peer per store
    r.pending.clear()
    assert r.promote(4) and r.epoch() == (5, 5)
    assert r.remove(2) and r.epoch() == (6, 5)
    assert not r.remove(1)  # the leader cannot remove itself
    assert r.epoch() == (6, 5)


def test_joint_consensus_enter_and_leave() -> None:
    r = region()
    r.add_learner(Peer(14, 4))
    assert r.enter_joint([4], [3]) and r.peer_on(4).role == PeerRole.INCOMING_VOTER  # type: ignore[union-attr]
    assert r.peer_on(3).role == PeerRole.DEMOTING_VOTER  # type: ignore[union-attr]
    assert r.leave_joint() and r.peer_on(4).role == PeerRole.VOTER  # type: ignore[union-attr]
    assert r.peer_on(3).role == PeerRole.LEARNER  # type: ignore[union-attr]
    assert r.epoch() == (6, 5)
    assert not r.enter_joint([], [1])  # the leader cannot be demoted


def test_midpoint_is_inside() -> None:
    for a, b in [(b"", b"z"), (b"a", b"b"), (b"t0001", b"t0002"), (b"x", b"")]:
        m = _midpoint(a, b)
        assert a < m and (not b or m < b), (a, b, m)


def test_a_refused_joint_change_changes_nothing() -> None:
    """Demoting the leader is refused before any promotion is applied."""
    r = region()
    r.add_learner(Peer(14, 4))
    before = ([(p.id, p.role) for p in r.peers], r.epoch())
    assert not r.enter_joint([4], [1])
    assert ([(p.id, p.role) for p in r.peers], r.epoch()) == before
