"""The stand-ins' peer protocol (pdsim.peers) with two or three one-store Fleets in this
process, on loopback HTTP, no PD: PD's steps are handed to the leader's Fleet as they
would arrive on its heartbeat stream, and the tests wait for the outcome on the other
store (condition polling on the event loop, no fixed sleeps)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from pdcore.adapters.clock import ScaledClock
from pdcore.domain.commands import (
    ChangePeer,
    ConfChangeType,
    RegionCommand,
    TransferLeader,
)
from pdcore.domain.region import Peer, PeerRole
from pdsim.fleet import Fleet, SimStore
from pdsim.model import SimRegion
from pdsim.peers import PATH, PeerLink, region_from_json, region_to_json
from tests.support.ports import free_port

SPEED = 20.0  # the fleets' clock: a step applies after 0.1 s of it


class Pod:
    """One stand-in: a Fleet playing one store, its link listening on its own port."""

    def __init__(self, store_id: int, state_file: Path | None = None) -> None:
        self.port = free_port()
        # PD is never called here (no store has a heartbeat stream): a channel to nowhere.
        self.fleet = Fleet("127.0.0.1:1", "", ScaledClock(SPEED))
        self.fleet._running = True  # what add_store() sets (it would call PD)
        self.store = SimStore(store_id, f"127.0.0.1:{self.port}", {})
        self.fleet.stores[store_id] = self.store
        self.link: PeerLink | None = None
        self.addresses: dict[int, str] = {}
        self.state_file = state_file

    async def start(self, addresses: dict[int, str]) -> None:
        async def resolve(store_id: int) -> str:
            if store_id not in addresses:
                raise LookupError(f"no store {store_id}")
            return addresses[store_id]

        self.addresses = addresses
        self.link = PeerLink(self.fleet, self.store.id, resolve, state_file=self.state_file)
        await self.link.start("127.0.0.1", self.port)

    def command(self, r: SimRegion, body: object) -> None:
        self.fleet.on_command(
            self.store,
            RegionCommand(r.id, r.epoch(), r.leader, body),  # type: ignore[arg-type]
        )

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        await self.fleet.close()


async def until(cond: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def pods(tmp_path: Path) -> AsyncIterator[list[Pod]]:
    ps = [Pod(i + 1, tmp_path / f"s{i + 1}.json") for i in range(3)]
    addresses = {p.store.id: p.store.address for p in ps}
    for p in ps:
        await p.start(addresses)
    try:
        yield ps
    finally:
        for p in ps:
            await p.close()


def region_on(pod: Pod, peers: list[Peer]) -> SimRegion:
    r = SimRegion(7, b"a", b"m", peers, peers[0].id, conf_ver=len(peers), size_mib=64)
    pod.fleet.regions[r.id] = r
    return r


def leader_of(pod: Pod, region_id: int) -> int | None:
    r = pod.fleet.regions.get(region_id)
    return r.leader_store if r is not None else None


async def test_an_added_learner_gets_the_region_by_snapshot_and_is_promoted(
    pods: list[Pod],
) -> None:
    a, b, _ = pods
    r = region_on(a, [Peer(70, 1)])
    a.command(r, ChangePeer(ConfChangeType.ADD_LEARNER_NODE, Peer(71, 2)))
    # B holds the region (meta and size) with its peer a learner; A no longer lists it
    # as pending once B has it.
    await until(lambda: 7 in b.fleet.regions, "the snapshot on store 2")
    await until(lambda: not a.fleet.regions[7].pending, "the learner caught up")
    copy = b.fleet.regions[7]
    assert copy.peer_on(2) == Peer(71, 2, PeerRole.LEARNER)
    assert (copy.start, copy.end, copy.size_mib, copy.leader_store) == (b"a", b"m", 64, 1)
    assert a.fleet.stats.snapshots == 1
    # The promotion is the leader's own change; the follower's copy follows it.
    r = a.fleet.regions[7]
    a.command(r, ChangePeer(ConfChangeType.ADD_NODE, Peer(71, 2)))
    await until(
        lambda: (p := b.fleet.regions[7].peer_on(2)) is not None and p.role == PeerRole.VOTER,
        "the promotion on store 2's copy",
    )
    assert b.fleet.regions[7].epoch() == a.fleet.regions[7].epoch()
    assert not b.fleet.regions[7].pending


async def test_a_snapshot_waits_for_a_store_that_is_not_there_yet(pods: list[Pod]) -> None:
    a = pods[0]
    r = region_on(a, [Peer(70, 1)])
    a.command(r, ChangePeer(ConfChangeType.ADD_LEARNER_NODE, Peer(79, 9)))  # no store 9 yet
    await until(lambda: r.peer_on(9) is not None, "the learner added")
    late = Pod(9)
    try:
        # Store 9's address is not known yet (PD has not got it): the learner stays
        # pending; once it is, a later attempt delivers the snapshot.
        assert a.link is not None
        await until(lambda: a.link is not None and a.link.failed_sends >= 2, "two attempts")
        assert r.pending == {79} and a.fleet.stats.snapshots == 0
        a.addresses[9] = late.store.address
        await late.start(a.addresses)
        await until(lambda: not r.pending, "the snapshot delivered once store 9 is there")
        assert late.fleet.regions[7].peer_on(9) == Peer(79, 9, PeerRole.LEARNER)
    finally:
        await late.close()


async def test_leader_transfer_moves_the_leadership_and_the_leader_steps_down(
    pods: list[Pod],
) -> None:
    a, b, c = pods
    peers = [Peer(70, 1), Peer(71, 2), Peer(72, 3)]
    r = region_on(a, peers)
    a.fleet.heartbeat(r)  # the followers get their copies, as raft would have given them
    await until(lambda: 7 in b.fleet.regions and 7 in c.fleet.regions, "the copies")
    a.command(r, TransferLeader(Peer(71, 2)))
    await until(lambda: leader_of(a, 7) == 2, "store 1 stepped down")
    assert leader_of(b, 7) == 2
    # B, the new leader, tells the third store too.
    await until(lambda: leader_of(c, 7) == 2, "store 3 knows the new leader")
    # A step PD sends to the former leader is ignored there (not the leader any more).
    a.command(a.fleet.regions[7], ChangePeer(ConfChangeType.REMOVE_NODE, Peer(72, 3)))
    b.command(b.fleet.regions[7], ChangePeer(ConfChangeType.REMOVE_NODE, Peer(70, 1)))
    # Remove: the removed peer's store drops the region, the rest follow the new epoch.
    await until(lambda: 7 not in a.fleet.regions, "store 1 dropped its peer")
    await until(lambda: c.fleet.regions[7].epoch() == b.fleet.regions[7].epoch(), "store 3's epoch")
    assert [p.store_id for p in c.fleet.regions[7].peers] == [2, 3]


async def test_a_stale_message_is_refused_with_409(pods: list[Pod]) -> None:
    a, b, _ = pods
    r = region_on(a, [Peer(70, 1), Peer(71, 2)])
    a.fleet.heartbeat(r)
    await until(lambda: 7 in b.fleet.regions, "the copy on store 2")
    assert b.link is not None
    rev = b.link.revs[7]
    old = {"rev": rev - 1, "gone": True, "region": region_to_json(r)}
    url = f"http://{b.store.address}{PATH}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=old) as resp:
            assert resp.status == 409
        async with http.post(url, json={"rev": "x"}) as resp:
            assert resp.status == 400
    assert 7 in b.fleet.regions  # a late "gone" of an older revision does not drop it


async def test_copies_survive_a_restart_through_the_state_file(
    pods: list[Pod], tmp_path: Path
) -> None:
    a, b, _ = pods
    r = region_on(a, [Peer(70, 1), Peer(71, 2)])
    a.fleet.heartbeat(r)
    await until(lambda: 7 in b.fleet.regions, "the copy on store 2")
    assert b.link is not None
    b.link.save()
    again = Pod(2, tmp_path / "s2.json")
    again.link = PeerLink(
        again.fleet, 2, lambda _sid: asyncio.sleep(0, ""), state_file=b.state_file
    )
    assert again.link.load() == 1
    assert region_to_json(again.fleet.regions[7]) == region_to_json(b.fleet.regions[7])
    assert again.link.revs[7] == b.link.revs[7]
    await again.fleet.close()


def test_region_json_round_trip() -> None:
    r = SimRegion(
        3, b"", b"\x00\xff", [Peer(1, 1), Peer(2, 2, PeerRole.LEARNER)], 1, 4, 5, 96, 7, {2}
    )
    again = region_from_json(json.loads(json.dumps(region_to_json(r))))
    assert again == r and again is not r
