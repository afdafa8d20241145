"""The simulated TiKV changes epochs exactly as TiKV does."""

from __future__ import annotations

import random
from typing import Any

from pdcore.domain.region import Peer, PeerRole
from pdsim.fleet import Fleet, SimStore, _midpoint
from pdsim.model import SimRegion
from tests.support.clocks import SteppedClock


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


class _NoChannel:
    """Enough of a channel for the fleet's stubs to be built; nothing is sent."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


async def test_every_region_heartbeats_each_interval_while_regions_come_and_go() -> None:
    # Once, periodic heartbeats went round a list by position: merges shifted it and a
    # region split off during dropped heartbeats went unheard for over 180 s (swarm seed
    # 214 of merge-while-balancing).
    clock = SteppedClock(1000.0)
    fleet = Fleet("pd", "status", clock, connect=lambda _address: _NoChannel())  # type: ignore[arg-type]
    rng = random.Random(7)
    heard: dict[int, float] = {}
    send = fleet.heartbeat

    def record(r: SimRegion, interval_s: int = 0) -> None:
        heard[r.id] = clock.t
        send(r, interval_s)

    fleet.heartbeat = record  # type: ignore[method-assign]
    # The store is down: nothing goes out, but each region's heartbeat timer still runs.
    fleet.stores[1] = SimStore(1, "127.0.0.1:20161", {}, up=False)
    next_id = 1000
    for rid in range(1, 41):
        fleet.regions[rid] = SimRegion(rid, b"", b"", [Peer(rid * 10, 1)], leader_id=rid * 10)
        record(fleet.regions[rid])
    interval = fleet.cfg.region_hb_s
    while clock.t < 1600:
        clock.t += 1.0
        if rng.random() < 0.2 and len(fleet.regions) > 10:  # a merge removes one
            fleet.regions.pop(rng.choice(sorted(set(fleet.regions) - {999})))
        if rng.random() < 0.2:  # a split adds one, heard once at once
            next_id += 1
            fleet.regions[next_id] = SimRegion(
                next_id, b"", b"", [Peer(next_id * 10, 1)], leader_id=next_id * 10
            )
            record(fleet.regions[next_id])
        if clock.t == 1100:  # a copy put in place without a heartbeat (a stand-in's)
            fleet.regions[999] = SimRegion(999, b"", b"", [Peer(9990, 1)], leader_id=9990)
        await fleet.step()
        # One tick of slack: a heartbeat due mid-tick goes out at the tick's end.
        late = {
            r: clock.t - t
            for r in fleet.regions
            if clock.t - (t := heard.get(r, 1e18)) > interval + 1
        }
        assert not late, f"t={clock.t}: regions unheard for over {interval + 1}s: {late}"
    assert 999 in heard, "a region put in place without a heartbeat was never heard"
