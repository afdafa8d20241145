"""The simulated fleet: stores that register with PD, heartbeat, and execute the
commands PD pushes on their region-heartbeat streams, over gRPC (real, or in process).

Costs: an added learner needs a snapshot that takes size / io-rate seconds, with at most
2 sends per leader store and 4 receives per store at a time; other steps apply after
`STEP_DELAY_S`. Time is the `Clock` port shared with PD: virtual time in the simulator
and the demo, so that outcomes do not depend on how fast the machine is.

A store's heartbeats wait in a bounded outbox: a newer heartbeat of the same region
replaces one not yet sent, as TiKV keeps only the latest state of a region to report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import heapq
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import grpc

from pdcore.adapters import codec
from pdcore.domain.commands import (
    ChangePeer,
    ChangePeerV2,
    ConfChangeType,
    Merge,
    RegionCommand,
    SplitRegion,
    TransferLeader,
)
from pdcore.domain.region import Peer, PeerRole
from pdcore.ports import Clock
from pdcore.proto import metapb_pb2, pdpb_pb2, pdpb_pb2_grpc
from pdsim.faults import Faults, NoFaults
from pdsim.model import MIB, SimRegion

log = logging.getLogger("kubepd.sim")

GIB = 1 << 30
STEP_DELAY_S = 0.1  # seconds for a raft admin command to apply
RECONNECT_S = 0.3  # seconds before a store reopens a heartbeat stream PD ended
STORE_HB_TIMEOUT_S = 3.0  # like TiKV, a slow PD must not stall the store
RETRY_S = 0.2  # between PutStore attempts while PD has no leader


class Control(Protocol):
    """What a person does to PD besides the fleet's own RPCs (pd-ctl, the HTTP API)."""

    async def take_offline(self, store_id: int) -> None: ...

    async def tombstones(self) -> list[int]: ...


class Remote(Protocol):
    """Stores that live in other processes (the stand-ins, one store per pod): how a
    leader here reaches them (pdsim.peers.PeerLink). Without one, every store is local."""

    def is_remote(self, store_id: int) -> bool: ...

    async def snapshot(self, r: SimRegion, peer: Peer) -> bool: ...

    async def transfer(self, r: SimRegion, target: Peer) -> bool: ...

    def changed(self, r: SimRegion) -> None: ...

    def dropped(self, r: SimRegion, store_id: int) -> None: ...


class HttpControl:
    """Control through PD's HTTP API at its status address."""

    def __init__(self, status_address: str) -> None:
        self.status_address = status_address

    async def take_offline(self, store_id: int) -> None:
        url = f"http://{self.status_address}/pd/api/v1/store/{store_id}"
        async with aiohttp.ClientSession() as http, http.delete(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"taking store {store_id} offline failed: {await resp.text()}")

    async def tombstones(self) -> list[int]:
        url = f"http://{self.status_address}/pd/api/v1/stores?state=2"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            data = await resp.json()
        return [int(item["store"]["id"]) for item in data.get("stores", [])]


def grpc_channel(address: str) -> Any:
    return grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )


class Outbox:
    """A store's heartbeats not yet sent, at most one per region (the newest)."""

    def __init__(self) -> None:
        self._pending: dict[int, pdpb_pb2.RegionHeartbeatRequest] = {}
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, region_id: int, req: pdpb_pb2.RegionHeartbeatRequest) -> None:
        self._pending.pop(region_id, None)  # re-queued at the back, as a fresh report
        self._pending[region_id] = req
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self._pending)

    async def get(self) -> pdpb_pb2.RegionHeartbeatRequest | None:
        while not self._pending:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            return None
        region_id = next(iter(self._pending))
        return self._pending.pop(region_id)


@dataclass
class FleetConfig:
    capacity_gib: int = 1024
    io_rate_mib_s: float = 40.0
    snap_send_limit: int = 2
    snap_recv_limit: int = 4
    region_hb_s: float = 60.0
    store_hb_s: float = 10.0
    split_size_mib: int = 96
    tick_wall_s: float = 0.02


@dataclass
class SimStore:
    id: int
    address: str
    labels: dict[str, str]
    up: bool = True
    removed: bool = False
    down_since: float = 0.0
    sending: int = 0
    receiving: int = 0
    call: Any = None  # the open RegionHeartbeat call
    outbox: Outbox = field(default_factory=Outbox)
    snap_slowdown: float = 1.0  # a store with a slow disk or network (fault schedules)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    extra_used: int = 0


@dataclass
class FleetStats:
    commands: int = 0
    stale_commands: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    heartbeat_errors: int = 0
    heartbeats: int = 0
    dropped_heartbeats: int = 0
    dropped_commands: int = 0
    refused_transfers: int = 0
    snapshots: int = 0
    splits: int = 0
    merges: int = 0
    reconnects: int = 0

    def count(self, kind: str) -> None:
        self.applied[kind] = self.applied.get(kind, 0) + 1


class Fleet:
    def __init__(
        self,
        pd_address: str,
        status_address: str,
        clock: Clock,
        config: FleetConfig | None = None,
        seed: int = 1,
        store_addresses: list[str] | None = None,
        connect: Callable[[str], Any] = grpc_channel,
        control: Control | None = None,
        faults: Faults | None = None,
    ) -> None:
        # With sidecars, store i talks to store_addresses[i % n], as a TiKV talks to the
        # PD in its own pod. `connect` makes a channel for an address (real gRPC, or an
        # in-process channel); `control` is what pd-ctl would do.
        self.store_addresses = store_addresses or []
        self._stubs: dict[str, pdpb_pb2_grpc.PDStub] = {}
        self._channels: list[Any] = []
        self._connect = connect
        self.pd_address = pd_address
        self.status_address = status_address
        self.control = control or HttpControl(status_address)
        self.faults: Faults = faults or NoFaults()
        self.remote: Remote | None = None  # set by a PeerLink in a stand-in
        self.clock = clock
        self.cfg = config or FleetConfig()
        self.rng = random.Random(seed)
        self.channel = connect(pd_address)
        self.stub = pdpb_pb2_grpc.PDStub(self.channel)
        self.cluster_id = 0
        self.stores: dict[int, SimStore] = {}
        self.regions: dict[int, SimRegion] = {}
        self.stats = FleetStats()
        # Told of every id PD hands out and what it names (the swarm's id-reuse check).
        self.on_id: Callable[[int, str], None] | None = None
        self._waiting_snaps: list[tuple[SimRegion, Peer]] = []
        self._last_store_hb = -1e18
        # When each region's next periodic heartbeat is due, as TiKV's per-region tick:
        # a heap of (due, region id); an entry is stale once `_hb_next` moved on.
        self._hb_due: list[tuple[float, int]] = []
        self._hb_next: dict[int, float] = {}
        self._hb_swept = -1e18  # regions put in `regions` without a heartbeat get one
        self._running = False
        self._busy: set[int] = set()  # regions with an async split under way
        # Regions whose leadership is being handed to another process: no updates from
        # here meanwhile (they would tell the followers this store still leads).
        self._handing_off: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # splits, remote steps: cancelled on close
        self.last_change_at = 0.0
        # Like Lightning/BR: scatter the new regions of these key ranges after each split.
        self.scatter_ranges: list[tuple[bytes, bytes, str]] = []

    # -- small helpers -----------------------------------------------------------------
    def stub_for(self, store_id: int) -> pdpb_pb2_grpc.PDStub:
        if not self.store_addresses:
            return self.stub
        index = sorted(self.stores).index(store_id) if store_id in self.stores else 0
        address = self.store_addresses[index % len(self.store_addresses)]
        if address not in self._stubs:
            ch = self._connect(address)
            self._channels.append(ch)
            self._stubs[address] = pdpb_pb2_grpc.PDStub(ch)
        return self._stubs[address]

    def header(self) -> pdpb_pb2.RequestHeader:
        return pdpb_pb2.RequestHeader(cluster_id=self.cluster_id)

    def now(self) -> float:
        return self.clock.monotonic_s()

    def at(self, delay_s: float, fn: Callable[[], None]) -> None:
        """Run `fn` after `delay_s` seconds of the fleet's clock (unless closed by then)."""

        def fire() -> None:
            if self._running:
                fn()

        self.clock.call_later(delay_s, fire)

    async def alloc_ids(self, count: int) -> list[int]:
        resp = await self.stub.AllocID(pdpb_pb2.AllocIDRequest(header=self.header(), count=count))
        if resp.header.HasField("error"):
            raise RuntimeError(resp.header.error.message)
        ids = list(range(resp.id - count + 1, resp.id + 1))
        for i in ids:
            self._claim(i, "AllocID")
        return ids

    def _claim(self, id_: int, what: str) -> None:
        if self.on_id is not None:
            self.on_id(id_, what)

    # -- start-up: what TiKV does ---------------------------------------------------------
    async def bootstrap(
        self,
        store_labels: list[dict[str, str]],
        layout: list[tuple[int, list[int]]],
        size_mib: int = 64,
        keys: int | None = None,
    ) -> None:
        """Create the stores and regions. `layout[i]` = (leader store index, peer store
        indexes) for region i; regions split the key space evenly."""
        members = await self.stub.GetMembers(pdpb_pb2.GetMembersRequest())
        self.cluster_id = members.header.cluster_id
        n_stores = len(store_labels)
        store_ids = await self.alloc_ids(n_stores)
        per_region = [1 + len(peers) for _, peers in layout]
        ids = await self.alloc_ids(sum(per_region))
        it = iter(ids)
        for sid, labels in zip(store_ids, store_labels, strict=True):
            self.stores[sid] = SimStore(sid, f"127.0.0.1:{20160 + sid}", labels)
        n = len(layout)
        for i, (leader_idx, peer_idx) in enumerate(layout):
            rid = next(it)
            peers = [Peer(next(it), store_ids[j]) for j in peer_idx]
            start = b"" if i == 0 else _key(i, n)
            end = b"" if i == n - 1 else _key(i + 1, n)
            leader = peers[peer_idx.index(leader_idx)]
            self.regions[rid] = SimRegion(
                rid,
                start,
                end,
                peers,
                leader.id,
                conf_ver=len(peers),
                version=2,
                size_mib=size_mib,
                keys=keys if keys is not None else size_mib * 10_000,
            )
        first_store = store_ids[0]
        boot_peer = (await self.alloc_ids(1))[0]
        first_rid = next(iter(self.regions))
        boot = await self.stub.Bootstrap(
            pdpb_pb2.BootstrapRequest(
                header=self.header(),
                store=self._store_pb(self.stores[first_store]),
                region=metapb_pb2.Region(
                    id=first_rid,
                    region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
                    peers=[metapb_pb2.Peer(id=boot_peer, store_id=first_store)],
                ),
            )
        )
        if boot.header.HasField("error"):
            raise RuntimeError(f"bootstrap failed: {boot.header.error.message}")
        for s in self.stores.values():
            await self._put_store(s)
        self._running = True
        self.last_change_at = self.now()
        for s in self.stores.values():
            self._open_stream(s)
        await self._store_heartbeats()
        for r in self.regions.values():
            self.heartbeat(r)
        # Spread the periodic ones evenly over the interval from here on.
        self._spread_heartbeats(list(self.regions))

    def _store_pb(self, s: SimStore) -> metapb_pb2.Store:
        return metapb_pb2.Store(
            id=s.id,
            address=s.address,
            version="8.5.0",
            labels=[metapb_pb2.StoreLabel(key=k, value=v) for k, v in s.labels.items()],
        )

    async def _put_store(self, s: SimStore) -> None:
        req = pdpb_pb2.PutStoreRequest(header=self.header(), store=self._store_pb(s))
        for attempt in range(50):  # like TiKV: retry while its PD has no leader yet
            try:
                resp = await self.stub_for(s.id).PutStore(req)
                break
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == 49:
                    raise
                await self.clock.sleep(RETRY_S)
        if resp.header.HasField("error"):
            raise RuntimeError(f"PutStore({s.id}): {resp.header.error.message}")

    def _open_stream(self, s: SimStore) -> None:
        s.outbox = outbox = Outbox()

        async def requests() -> AsyncIterator[pdpb_pb2.RegionHeartbeatRequest]:
            while True:
                item = await outbox.get()
                if item is None:
                    return
                yield item

        s.call = self.stub_for(s.id).RegionHeartbeat(requests())
        s.tasks = [asyncio.get_running_loop().create_task(self._read(s))]

    async def _read(self, s: SimStore) -> None:
        call = s.call
        assert call is not None
        try:
            async for resp in call:
                if resp.header.HasField("error"):
                    self.stats.heartbeat_errors += 1
                    continue
                cmd = codec.command_from_pb(resp)
                if cmd is not None:
                    self.stats.commands += 1
                    if self.faults.drop_command(cmd.region_id):
                        self.stats.dropped_commands += 1
                        continue
                    self.on_command(s, cmd)
        except asyncio.CancelledError:
            return  # closed on purpose
        except grpc.aio.AioRpcError:
            pass
        # PD ended the stream (a failover, a restart): reconnect, as TiKV does.
        await self.clock.sleep(RECONNECT_S)
        if self._running and s.up and s.call is call:
            s.outbox.close()
            self.stats.reconnects += 1
            self._open_stream(s)
            for r in self.regions.values():  # PD learns the leaders on the new stream
                if r.leader_store == s.id:
                    self.heartbeat(r)

    def _close_stream(self, s: SimStore) -> None:
        s.outbox.close()
        if s.call is not None:
            s.call.cancel()
        for t in s.tasks:
            t.cancel()
        s.call, s.tasks = None, []

    # -- heartbeats ---------------------------------------------------------------------------
    def _next_heartbeat(self, rid: int, at: float) -> None:
        self._hb_next[rid] = at
        heapq.heappush(self._hb_due, (at, rid))

    def _spread_heartbeats(self, rids: list[int]) -> None:
        """The next periodic heartbeats of `rids`, evenly over one interval from now."""
        now = self.now()
        for i, rid in enumerate(rids):
            self._next_heartbeat(rid, now + self.cfg.region_hb_s * (i + 1) / len(rids))

    def heartbeat(self, r: SimRegion, interval_s: int = 0) -> None:
        # The next periodic one is due an interval from now, whether or not this one
        # gets out (a down store's leader, a dropped message): it is tried again then.
        self._next_heartbeat(r.id, self.now() + self.cfg.region_hb_s)
        store = self.stores.get(r.leader_store)
        if store is None or not store.up:
            return
        if self.remote is not None and r.id not in self._handing_off:
            self.remote.changed(r)  # what goes to PD goes to the followers elsewhere too
        if store.call is None:
            return
        if self.faults.drop_heartbeat(r.id):
            self.stats.dropped_heartbeats += 1
            return
        req = pdpb_pb2.RegionHeartbeatRequest(header=self.header())
        codec.region_to_heartbeat(r.to_region(interval_s), req)
        now = self.now()
        for p in r.peers:
            ps = self.stores.get(p.store_id)
            if ps is not None and not ps.up:
                d = req.down_peers.add()
                codec.peer_to_pb(p, d.peer)
                d.down_seconds = int(now - ps.down_since)
        if interval_s:
            req.interval.start_timestamp = int(self.clock.now_s()) - interval_s
            req.interval.end_timestamp = int(self.clock.now_s())
        store.outbox.put(r.id, req)
        self.stats.heartbeats += 1

    async def _store_heartbeats(self) -> None:
        used: dict[int, int] = {sid: s.extra_used for sid, s in self.stores.items()}
        counts: dict[int, int] = dict.fromkeys(self.stores, 0)
        reads: dict[int, float] = dict.fromkeys(self.stores, 0.0)
        for r in self.regions.values():
            for p in r.peers:
                if p.store_id in used:
                    used[p.store_id] += r.size_mib * MIB
                    counts[p.store_id] += 1
            if r.leader_store in reads:
                reads[r.leader_store] += r.read_rate
        now_s = int(self.clock.now_s())
        interval = int(self.cfg.store_hb_s)
        calls = []
        for s in self.stores.values():
            if not s.up or s.removed:
                continue
            cap = self.cfg.capacity_gib * GIB
            stats = pdpb_pb2.StoreStats(
                store_id=s.id,
                capacity=cap,
                available=max(0, cap - used[s.id]),
                used_size=used[s.id],
                region_count=counts[s.id],
                sending_snap_count=s.sending,
                receiving_snap_count=s.receiving,
                start_time=now_s,
                bytes_read=int(reads[s.id] * interval),
                interval=pdpb_pb2.TimeInterval(
                    start_timestamp=now_s - interval, end_timestamp=now_s
                ),
                slow_score=1,
            )
            calls.append(
                self.stub_for(s.id).StoreHeartbeat(
                    pdpb_pb2.StoreHeartbeatRequest(header=self.header(), stats=stats),
                    timeout=STORE_HB_TIMEOUT_S,
                )
            )
        for resp in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(resp, BaseException) or resp.header.HasField("error"):
                self.stats.heartbeat_errors += 1

    # -- executing PD's commands ----------------------------------------------------------------
    def on_command(self, store: SimStore, cmd: RegionCommand) -> None:
        r = self.regions.get(cmd.region_id)
        if r is None or r.leader_store != store.id or not store.up:
            log.debug("command for region %d: not its leader here", cmd.region_id)
            return
        if cmd.epoch != r.epoch() or r.id in self._busy:
            log.debug("stale command for region %d: %s", r.id, cmd.epoch)
            self.stats.stale_commands += 1
            return
        body = cmd.body
        if isinstance(body, ChangePeer) and body.change_type != ConfChangeType.REMOVE_NODE:
            self._claim(body.peer.id, f"peer of region {r.id} on store {body.peer.store_id}")
        if isinstance(body, ChangePeer):
            self.at(STEP_DELAY_S, lambda: self._change_peer(r, body))
        elif isinstance(body, ChangePeerV2):
            self.at(STEP_DELAY_S, lambda: self._change_peer_v2(r, body))
        elif isinstance(body, TransferLeader):
            if self.faults.refuse_transfer(r.id):
                self.stats.refused_transfers += 1  # raft refused it (lagging target, busy)
                return
            self.at(STEP_DELAY_S, lambda: self._transfer(r, body.peer))
        elif isinstance(body, Merge):
            self.at(STEP_DELAY_S, lambda: self._merge(r, body.target.id))
        elif isinstance(body, SplitRegion):
            self._start_split(r, list(body.keys))

    @property
    def settled_since(self) -> float:
        """Sim time of the last change PD asked for (or of start-up)."""
        return self.last_change_at

    def _applied(self, r: SimRegion, kind: str) -> None:
        if kind != "split":
            self.last_change_at = self.now()
        self.stats.count(kind)
        self.heartbeat(r)

    def _change_peer(self, r: SimRegion, body: ChangePeer) -> None:
        if self.regions.get(r.id) is not r:
            return
        t = body.change_type
        if t == ConfChangeType.ADD_LEARNER_NODE:
            if r.add_learner(body.peer):
                self._waiting_snaps.append((r, body.peer))
                self._applied(r, "add-learner")
                self._start_snapshots()
        elif t == ConfChangeType.ADD_NODE:
            if r.peer_on(body.peer.store_id) is None:
                # Adding a voter directly: a learner first, then promotion after the snapshot.
                r.add_learner(body.peer)
                self._waiting_snaps.append((r, body.peer))
                self._start_snapshots()
            elif body.peer.id not in r.pending and r.promote(body.peer.store_id):
                self._applied(r, "promote")
        elif t == ConfChangeType.REMOVE_NODE and r.remove(body.peer.store_id):
            if self.remote is not None:
                self.remote.dropped(r, body.peer.store_id)
            self._applied(r, "remove-peer")

    def _change_peer_v2(self, r: SimRegion, body: ChangePeerV2) -> None:
        if self.regions.get(r.id) is not r:
            return
        if not body.changes:
            if r.leave_joint():
                self._applied(r, "leave-joint")
            return
        promote = [
            c.peer.store_id for c in body.changes if c.change_type == ConfChangeType.ADD_NODE
        ]
        demote = [
            c.peer.store_id
            for c in body.changes
            if c.change_type == ConfChangeType.ADD_LEARNER_NODE
        ]
        if any(p.role in (PeerRole.INCOMING_VOTER, PeerRole.DEMOTING_VOTER) for p in r.peers):
            return
        if any((p := r.peer_on(s)) is None or p.id in r.pending for s in promote):
            return
        if r.enter_joint(promote, demote):
            self._applied(r, "enter-joint")

    def _transfer(self, r: SimRegion, target: Peer) -> None:
        if self.regions.get(r.id) is not r:
            return
        p = r.peer_on(target.store_id)
        s = self.stores.get(target.store_id)
        if p is None or p.role != PeerRole.VOTER or p.id in r.pending:
            return
        if s is None and self.remote is not None:
            self._spawn(self._remote_transfer(r, p))
            return
        if s is None or not s.up:
            return
        r.leader_id = p.id
        self._applied(r, "transfer-leader")

    def _merge(self, src: SimRegion, target_id: int) -> None:
        dst = self.regions.get(target_id)
        if self.regions.get(src.id) is not src or dst is None:
            return
        if {p.store_id for p in src.peers} != {p.store_id for p in dst.peers}:
            return
        if src.end == dst.start and src.end:
            dst.start = src.start
        elif dst.end == src.start and dst.end:
            dst.end = src.end
        else:
            return
        dst.version = max(src.version, dst.version) + 1
        dst.size_mib += src.size_mib
        dst.keys += src.keys
        del self.regions[src.id]
        if self.remote is not None:
            for p in src.peers:
                self.remote.dropped(src, p.store_id)
        self.stats.merges += 1
        self._applied(dst, "merge")

    def _start_snapshots(self) -> None:
        still: list[tuple[SimRegion, Peer]] = []
        for r, peer in self._waiting_snaps:
            if self.regions.get(r.id) is not r or r.peer_on(peer.store_id) is None:
                continue
            sender = self.stores.get(r.leader_store)
            receiver = self.stores.get(peer.store_id)
            if sender is not None and receiver is None and self.remote is not None:
                if sender.sending >= self.cfg.snap_send_limit:
                    still.append((r, peer))
                else:
                    sender.sending += 1
                    self._spawn(self._remote_snapshot(r, peer, sender))
                continue
            if sender is None or receiver is None or not receiver.up:
                still.append((r, peer))
                continue
            if (
                sender.sending >= self.cfg.snap_send_limit
                or receiver.receiving >= self.cfg.snap_recv_limit
            ):
                still.append((r, peer))
                continue
            sender.sending += 1
            receiver.receiving += 1
            rate = self.cfg.io_rate_mib_s / max(sender.snap_slowdown, receiver.snap_slowdown)
            duration = max(STEP_DELAY_S, r.size_mib / rate)
            self.at(duration, functools.partial(self._snapshot_done, r, peer, sender, receiver))
        self._waiting_snaps = still

    def _snapshot_done(
        self, r: SimRegion, peer: Peer, sender: SimStore, receiver: SimStore
    ) -> None:
        sender.sending -= 1
        receiver.receiving -= 1
        self._snapshot_applied(r, peer)
        self._start_snapshots()

    def _snapshot_applied(self, r: SimRegion, peer: Peer) -> None:
        """The peer has its snapshot (here or in another process): no longer pending."""
        self.stats.snapshots += 1
        if self.regions.get(r.id) is r and peer.id in r.pending:
            r.pending.discard(peer.id)
            self._applied(r, "snapshot")

    async def _remote_snapshot(self, r: SimRegion, peer: Peer, sender: SimStore) -> None:
        assert self.remote is not None
        try:
            done = await self.remote.snapshot(r, peer)
        finally:
            sender.sending -= 1
        if not done:  # the store is not there (yet): try again later
            await self.clock.sleep(RECONNECT_S)
            self._waiting_snaps.append((r, peer))
        else:
            self._snapshot_applied(r, peer)
        self._start_snapshots()

    async def _remote_transfer(self, r: SimRegion, target: Peer) -> None:
        assert self.remote is not None
        if r.id in self._handing_off:
            return
        self._handing_off.add(r.id)
        self._busy.add(r.id)  # PD's steps wait for the outcome
        try:
            done = await self.remote.transfer(r, target)
        finally:
            self._handing_off.discard(r.id)
            self._busy.discard(r.id)
        if not done or self.regions.get(r.id) is not r:
            return
        # Step down: a new object, so that timers still due for the old one do nothing.
        self.regions[r.id] = dataclasses.replace(
            r, peers=list(r.peers), pending=set(r.pending), leader_id=target.id
        )
        self.last_change_at = self.now()
        self.stats.count("transfer-leader")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def split_soon(self, region_id: int) -> None:
        """TiKV splits this region on its own (size, load): at its middle key."""
        r = self.regions.get(region_id)
        s = self.stores.get(r.leader_store) if r is not None else None
        if r is not None and s is not None and s.up and r.id not in self._busy:
            self._start_split(r, [])

    def _start_split(self, r: SimRegion, keys: list[bytes]) -> None:
        self._busy.add(r.id)
        self._spawn(self.split(r, keys))

    async def split(self, r: SimRegion, keys: list[bytes]) -> None:
        """TiKV's split: ask PD for ids, split, report, heartbeat both halves."""
        try:
            if not keys:
                keys = [_midpoint(r.start, r.end)]
            key = keys[0]
            if not (r.start < key and (not r.end or key < r.end)):
                return
            ask = await self.stub_for(r.leader_store).AskBatchSplit(
                pdpb_pb2.AskBatchSplitRequest(
                    header=self.header(),
                    region=codec.region_meta_to_pb(r.to_region()),
                    split_count=1,
                )
            )
            if ask.header.HasField("error") or self.regions.get(r.id) is not r:
                return
            new_id = ask.ids[0].new_region_id
            self._claim(new_id, f"region split from {r.id}")
            for pid, p in zip(ask.ids[0].new_peer_ids, r.peers, strict=False):
                self._claim(pid, f"peer of region {new_id} on store {p.store_id}")
            new_peers = [
                Peer(pid, p.store_id, p.role)
                for pid, p in zip(ask.ids[0].new_peer_ids, r.peers, strict=True)
            ]
            leader_store = r.leader_store
            left = SimRegion(
                new_id,
                r.start,
                key,
                new_peers,
                next(p.id for p in new_peers if p.store_id == leader_store),
                conf_ver=r.conf_ver,
                version=r.version + 1,
                size_mib=max(1, r.size_mib // 2),
                keys=r.keys // 2,
                write_rate=r.write_rate / 2,
                read_rate=r.read_rate / 2,
            )
            r.start, r.version = key, r.version + 1
            r.size_mib, r.keys = max(1, r.size_mib - left.size_mib), r.keys - left.keys
            r.write_rate /= 2
            r.read_rate /= 2
            self.regions[new_id] = left
            self.stats.splits += 1
            await self.stub_for(r.leader_store).ReportBatchSplit(
                pdpb_pb2.ReportBatchSplitRequest(
                    header=self.header(),
                    regions=[
                        codec.region_meta_to_pb(left.to_region()),
                        codec.region_meta_to_pb(r.to_region()),
                    ],
                )
            )
            self._applied(left, "split")
            self.heartbeat(r)
            for lo, hi, group in self.scatter_ranges:
                if lo <= left.start and (not hi or (left.end and left.end <= hi)):
                    await self.clock.sleep(0.05)  # let PD see both halves first
                    await self.stub.ScatterRegion(
                        pdpb_pb2.ScatterRegionRequest(
                            header=self.header(), regions_id=[left.id, r.id], group=group
                        )
                    )
        finally:
            self._busy.discard(r.id)

    # -- topology changes ----------------------------------------------------------------------
    async def add_store(
        self, labels: dict[str, str], address: str | None = None, store_id: int | None = None
    ) -> int:
        """A store joins: a new id unless `store_id` (a restarted store) is given."""
        (sid,) = [store_id] if store_id is not None else await self.alloc_ids(1)
        s = SimStore(sid, address or f"127.0.0.1:{20160 + sid}", labels)
        self.stores[sid] = s
        await self._put_store(s)
        self._running = True  # a stand-in's one store: there was no bootstrap() here
        self._open_stream(s)
        return sid

    def stop_store(self, sid: int) -> None:
        """The store dies: its stream closes, raft elects new leaders elsewhere."""
        s = self.stores[sid]
        s.up = False
        s.down_since = self.now()
        self._close_stream(s)
        for r in self.regions.values():
            if r.leader_store == sid:
                live = [
                    p
                    for p in r.peers
                    if p.role == PeerRole.VOTER
                    and p.store_id != sid
                    and self.stores.get(p.store_id, s).up
                ]
                if live:
                    r.leader_id = self.rng.choice(live).id
                    self.heartbeat(r)

    def restart_store(self, sid: int) -> None:
        s = self.stores[sid]
        s.up = True
        self._open_stream(s)

    async def remove_store(self, sid: int) -> None:
        """Ask PD to take the store offline, as an operator would (DELETE /store/{id})."""
        await self.control.take_offline(sid)

    async def drop_tombstones(self) -> list[int]:
        """Stores PD buried are shut down for good."""
        gone = []
        for sid in await self.control.tombstones():
            s = self.stores.get(sid)
            if s is not None and not s.removed:
                s.removed = True
                s.up = False
                self._close_stream(s)
                gone.append(sid)
        return gone

    # -- the main loop ----------------------------------------------------------------------------
    async def step(self) -> None:
        """One tick: periodic store and region heartbeats, growth. (Step completions and
        snapshots are timers of their own.)"""
        now = self.now()
        if now - self._last_store_hb >= self.cfg.store_hb_s:
            self._last_store_hb = now
            await self._store_heartbeats()
        # Each region's periodic heartbeat when it is due (spread over the interval at
        # bootstrap; any other heartbeat of the region moves it on). Once an interval,
        # regions that came in without one (a stand-in's copies read back from disk or
        # sent by a leader) are given theirs.
        if now - self._hb_swept >= self.cfg.region_hb_s:
            self._hb_swept = now
            self._spread_heartbeats(sorted(self.regions.keys() - self._hb_next.keys()))
        due = self._hb_due
        while due and due[0][0] <= now:
            at, rid = heapq.heappop(due)
            r = self.regions.get(rid)
            if r is None:
                self._hb_next.pop(rid, None)  # merged away
                continue
            if self._hb_next.get(rid) != at:
                continue  # superseded by a later heartbeat of the region
            self.heartbeat(r, interval_s=int(self.cfg.region_hb_s))
            if r.write_rate:
                r.size_mib += max(1, int(r.write_rate * self.cfg.region_hb_s / MIB))
                if r.size_mib >= self.cfg.split_size_mib and r.id not in self._busy:
                    self._start_split(r, [])

    async def close(self) -> None:
        self._running = False
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self.stores.values():
            self._close_stream(s)
        await self.channel.close(None)
        for ch in self._channels:
            await ch.close(None)


def _key(i: int, n: int) -> bytes:
    return b"t%08d" % (i * (100_000_000 // max(1, n)))


def _midpoint(start: bytes, end: bytes) -> bytes:
    """A key strictly between start and end (end empty = +inf)."""
    if not end:
        return start + b"\x80"
    a = int.from_bytes(start.ljust(16, b"\0")[:16], "big")
    b = int.from_bytes(end.ljust(16, b"\0")[:16], "big")
    mid = ((a + b) // 2).to_bytes(16, "big").rstrip(b"\0") or b"\0"
    if not (start < mid < end):
        mid = start + b"\x80"
    return mid
