"""Protobuf <-> domain conversions for the PD wire types.

The only place that knows both `pdcore.proto` messages and `pdcore.domain` values;
the servicer, the simulator's helpers and the sidecar all go through here.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from pdcore.domain.commands import (
    ChangePeer,
    ChangePeerV2,
    Merge,
    RegionCommand,
    SplitRegion,
    TransferLeader,
)
from pdcore.domain.errors import InvalidValue
from pdcore.domain.region import (
    MIB,
    NO_FLOW,
    FlowStats,
    Peer,
    PeerRole,
    PeerStats,
    Region,
    RegionEpoch,
    size_mib_from_bytes,
)
from pdcore.domain.store import NodeState, Store, StoreState, StoreStats
from pdcore.proto import kubepdpb_pb2, metapb_pb2, pdpb_pb2

_QUERY_READ = ("Get", "Scan", "Coprocessor")
_QUERY_WRITE = (
    "Delete",
    "DeleteRange",
    "Put",
    "Prewrite",
    "AcquirePessimisticLock",
    "Commit",
    "Rollback",
)


E = TypeVar("E", bound=enum.IntEnum)


def enum_from_pb(cls: type[E], value: int, what: str) -> E:
    """A proto3 enum is open: a value we do not know is the client's error."""
    try:
        return cls(value)
    except ValueError:
        raise InvalidValue(f"invalid request: unknown {what} {value}") from None


# -- peers and regions ---------------------------------------------------------
def peer_from_pb(p: metapb_pb2.Peer) -> Peer:
    return Peer(p.id, p.store_id, enum_from_pb(PeerRole, p.role, "peer role"), p.is_witness)


def peer_to_pb(p: Peer, out: metapb_pb2.Peer | None = None) -> metapb_pb2.Peer:
    msg = out if out is not None else metapb_pb2.Peer()
    msg.id = p.id
    msg.store_id = p.store_id
    if p.role:
        msg.role = int(p.role)  # type: ignore[assignment]
    if p.is_witness:
        msg.is_witness = True
    return msg


def region_meta_from_pb(r: metapb_pb2.Region) -> Region:
    return Region(
        id=r.id,
        start_key=r.start_key,
        end_key=r.end_key,
        epoch=RegionEpoch(r.region_epoch.conf_ver, r.region_epoch.version),
        peers=tuple(peer_from_pb(p) for p in r.peers),
    )


_IDLE_FLOWS: dict[int, FlowStats] = {0: NO_FLOW}


def _idle_flow(interval_s: int) -> FlowStats:
    """No traffic over `interval_s`: one shared value per interval length."""
    flow = _IDLE_FLOWS.get(interval_s)
    if flow is None:
        flow = FlowStats(interval_s=interval_s)
        if interval_s <= 3600:  # bounded: TiKV reports a handful of interval lengths
            _IDLE_FLOWS[interval_s] = flow
    return flow


def region_from_heartbeat(req: pdpb_pb2.RegionHeartbeatRequest) -> Region:
    r = req.region
    flow = NO_FLOW
    if (
        req.bytes_written
        or req.bytes_read
        or req.keys_written
        or req.keys_read
        or req.HasField("query_stats")
    ):
        # Most regions are cold: they share an idle FlowStats instead of a tuple each.
        interval = req.interval
        q = req.query_stats
        flow = FlowStats(
            bytes_written=req.bytes_written,
            bytes_read=req.bytes_read,
            keys_written=req.keys_written,
            keys_read=req.keys_read,
            query_write=sum(getattr(q, f) for f in _QUERY_WRITE),
            query_read=sum(getattr(q, f) for f in _QUERY_READ),
            interval_s=max(0, interval.end_timestamp - interval.start_timestamp),
        )
    peers = tuple([peer_from_pb(p) for p in r.peers])
    leader = None
    if req.HasField("leader"):
        # Share the leader's Peer with the peer list: one object per peer per region.
        # PD's simulator reports a region split off with its parent's leader peer id
        # (the store is right): the region's peer on the leader's store is the leader.
        lid, lstore = req.leader.id, req.leader.store_id
        leader = (
            next((p for p in peers if p.id == lid), None)
            or next((p for p in peers if p.store_id == lstore), None)
            or peer_from_pb(req.leader)
        )
    return Region(
        id=r.id,
        start_key=r.start_key,
        end_key=r.end_key,
        epoch=RegionEpoch(r.region_epoch.conf_ver, r.region_epoch.version),
        peers=peers,
        leader=leader,
        down_peers=tuple(PeerStats(peer_from_pb(d.peer), d.down_seconds) for d in req.down_peers),
        pending_peers=tuple(peer_from_pb(p) for p in req.pending_peers),
        approximate_size=size_mib_from_bytes(req.approximate_size),
        approximate_keys=req.approximate_keys,
        flow=flow,
        term=req.term,
        cpu_usage=req.cpu_usage,
    )


# The region sync carries each region's traffic (pdpb.RegionStat) but not the interval it
# was measured over: a synced copy takes TiKV's region heartbeat interval (60 s).
SYNCED_FLOW_INTERVAL_S = 60


def sync_batch_to_pb(regions: list[Region], out: pdpb_pb2.SyncRegionResponse) -> None:
    """Regions into a region-sync batch: meta, leader, traffic, down and pending peers,
    one entry each in the parallel lists (sizes go by GetRegionSizes)."""
    for r in regions:
        region_meta_to_pb(r, out.regions.add())
        leader = out.region_leaders.add()
        if r.leader is not None:
            peer_to_pb(r.leader, leader)
        stat = out.region_stats.add()
        f = r.flow
        stat.bytes_written, stat.bytes_read = f.bytes_written, f.bytes_read
        stat.keys_written, stat.keys_read = f.keys_written, f.keys_read
        down = out.down_peers.add()
        for d in r.down_peers:
            ps = down.peers.add()
            peer_to_pb(d.peer, ps.peer)
            ps.down_seconds = d.down_seconds
        pending = out.pending_peers.add()
        for p in r.pending_peers:
            peer_to_pb(p, pending.peers.add())


def regions_from_sync(resp: pdpb_pb2.SyncRegionResponse) -> list[Region]:
    """A region-sync batch back into regions (a list shorter than `regions` is empty)."""
    out = []
    for i, meta in enumerate(resp.regions):
        leader = resp.region_leaders[i] if i < len(resp.region_leaders) else None
        downs = resp.down_peers[i].peers if i < len(resp.down_peers) else []
        pend = resp.pending_peers[i].peers if i < len(resp.pending_peers) else []
        flow = NO_FLOW
        if i < len(resp.region_stats):
            st = resp.region_stats[i]
            if st.bytes_written or st.bytes_read or st.keys_written or st.keys_read:
                flow = FlowStats(
                    bytes_written=st.bytes_written,
                    bytes_read=st.bytes_read,
                    keys_written=st.keys_written,
                    keys_read=st.keys_read,
                    interval_s=SYNCED_FLOW_INTERVAL_S,
                )
        out.append(
            region_meta_from_pb(meta).with_(
                leader=peer_from_pb(leader) if leader is not None and leader.id else None,
                down_peers=tuple(PeerStats(peer_from_pb(d.peer), d.down_seconds) for d in downs),
                pending_peers=tuple(peer_from_pb(p) for p in pend),
                flow=flow,
            )
        )
    return out


def region_meta_to_pb(r: Region, out: metapb_pb2.Region | None = None) -> metapb_pb2.Region:
    msg = out if out is not None else metapb_pb2.Region()
    msg.id = r.id
    msg.start_key = r.start_key
    msg.end_key = r.end_key
    msg.region_epoch.conf_ver = r.epoch.conf_ver
    msg.region_epoch.version = r.epoch.version
    for p in r.peers:
        peer_to_pb(p, msg.peers.add())
    return msg


def fill_region_response(
    r: Region,
    out: pdpb_pb2.GetRegionResponse | pdpb_pb2.Region | pdpb_pb2.RegionResponse,
) -> None:
    """Fill region, leader, down and pending peers (shared by every lookup RPC)."""
    region_meta_to_pb(r, out.region)
    if r.leader is not None:
        peer_to_pb(r.leader, out.leader)
    for d in r.down_peers:
        ps = out.down_peers.add()
        peer_to_pb(d.peer, ps.peer)
        ps.down_seconds = d.down_seconds
    for p in r.pending_peers:
        peer_to_pb(p, out.pending_peers.add())


def region_to_heartbeat(r: Region, req: pdpb_pb2.RegionHeartbeatRequest) -> None:
    """The inverse of `region_from_heartbeat`, for simulators and sidecars."""
    region_meta_to_pb(r, req.region)
    if r.leader is not None:
        peer_to_pb(r.leader, req.leader)
    for d in r.down_peers:
        ps = req.down_peers.add()
        peer_to_pb(d.peer, ps.peer)
        ps.down_seconds = d.down_seconds
    for p in r.pending_peers:
        peer_to_pb(p, req.pending_peers.add())
    req.approximate_size = r.approximate_size * MIB
    req.approximate_keys = r.approximate_keys
    req.bytes_written = r.flow.bytes_written
    req.bytes_read = r.flow.bytes_read
    req.keys_written = r.flow.keys_written
    req.keys_read = r.flow.keys_read
    req.term = r.term


# -- stores --------------------------------------------------------------------
def store_from_pb(s: metapb_pb2.Store) -> Store:
    return Store(
        id=s.id,
        address=s.address,
        state=enum_from_pb(StoreState, s.state, "store state"),
        node_state=enum_from_pb(NodeState, s.node_state, "node state"),
        labels=tuple((lb.key, lb.value) for lb in s.labels),
        version=s.version,
        peer_address=s.peer_address,
        status_address=s.status_address,
        git_hash=s.git_hash,
        start_timestamp=s.start_timestamp,
        deploy_path=s.deploy_path,
        last_heartbeat_ns=s.last_heartbeat,
        physically_destroyed=s.physically_destroyed,
    )


def store_to_pb(s: Store, out: metapb_pb2.Store | None = None) -> metapb_pb2.Store:
    msg = out if out is not None else metapb_pb2.Store()
    msg.id = s.id
    msg.address = s.address
    msg.state = int(s.state)  # type: ignore[assignment]
    msg.node_state = int(s.node_state)  # type: ignore[assignment]
    for k, v in s.labels:
        lb = msg.labels.add()
        lb.key, lb.value = k, v
    msg.version = s.version
    msg.peer_address = s.peer_address
    msg.status_address = s.status_address
    msg.git_hash = s.git_hash
    msg.start_timestamp = s.start_timestamp
    msg.deploy_path = s.deploy_path
    msg.last_heartbeat = s.last_heartbeat_ns
    msg.physically_destroyed = s.physically_destroyed
    return msg


def store_stats_from_pb(st: pdpb_pb2.StoreStats) -> StoreStats:
    q = st.query_stats
    has_q = st.HasField("query_stats")
    return StoreStats(
        capacity=st.capacity,
        available=st.available,
        used_size=st.used_size,
        region_count=st.region_count,
        sending_snap_count=st.sending_snap_count,
        receiving_snap_count=st.receiving_snap_count,
        applying_snap_count=st.applying_snap_count,
        is_busy=st.is_busy,
        start_time=st.start_time,
        bytes_written=st.bytes_written,
        keys_written=st.keys_written,
        bytes_read=st.bytes_read,
        keys_read=st.keys_read,
        query_read=sum(getattr(q, f) for f in _QUERY_READ) if has_q else 0,
        query_write=sum(getattr(q, f) for f in _QUERY_WRITE) if has_q else 0,
        interval_s=max(0, st.interval.end_timestamp - st.interval.start_timestamp),
        slow_score=st.slow_score,
        is_stopping=st.is_stopping,
    )


def store_stats_to_pb(store_id: int, s: StoreStats, out: pdpb_pb2.StoreStats) -> None:
    out.store_id = store_id
    out.capacity = s.capacity
    out.available = s.available
    out.used_size = s.used_size
    out.region_count = s.region_count
    out.sending_snap_count = s.sending_snap_count
    out.receiving_snap_count = s.receiving_snap_count
    out.applying_snap_count = s.applying_snap_count
    out.is_busy = s.is_busy
    out.start_time = s.start_time
    out.bytes_written = s.bytes_written
    out.keys_written = s.keys_written
    out.bytes_read = s.bytes_read
    out.keys_read = s.keys_read
    out.slow_score = s.slow_score
    out.is_stopping = s.is_stopping


def store_info_to_pb(s: Store) -> kubepdpb_pb2.StoreInfo:
    """A store with its heartbeat figures, for schedulers outside the pd-leader."""
    info = kubepdpb_pb2.StoreInfo()
    store_to_pb(s, info.store)
    store_stats_to_pb(s.id, s.stats, info.stats)
    # The totals store_stats_from_pb sums from query_stats, and the interval's length.
    info.stats.query_stats.Get = s.stats.query_read
    info.stats.query_stats.Put = s.stats.query_write
    info.stats.interval.end_timestamp = s.stats.interval_s
    return info


def store_info_from_pb(info: kubepdpb_pb2.StoreInfo) -> Store:
    return store_from_pb(info.store).with_(stats=store_stats_from_pb(info.stats))


# -- commands --------------------------------------------------------------------
def command_to_pb(cmd: RegionCommand, cluster_id: int) -> pdpb_pb2.RegionHeartbeatResponse:
    resp = pdpb_pb2.RegionHeartbeatResponse()
    resp.header.cluster_id = cluster_id
    resp.region_id = cmd.region_id
    resp.region_epoch.conf_ver = cmd.epoch.conf_ver
    resp.region_epoch.version = cmd.epoch.version
    if cmd.target_peer is not None:
        peer_to_pb(cmd.target_peer, resp.target_peer)
    body = cmd.body
    if isinstance(body, ChangePeer):
        peer_to_pb(body.peer, resp.change_peer.peer)
        resp.change_peer.change_type = int(body.change_type)  # type: ignore[assignment]
    elif isinstance(body, ChangePeerV2):
        resp.change_peer_v2.SetInParent()
        for ch in body.changes:
            c = resp.change_peer_v2.changes.add()
            peer_to_pb(ch.peer, c.peer)
            c.change_type = int(ch.change_type)  # type: ignore[assignment]
    elif isinstance(body, TransferLeader):
        peer_to_pb(body.peer, resp.transfer_leader.peer)
        for p in body.peers:
            peer_to_pb(p, resp.transfer_leader.peers.add())
    elif isinstance(body, Merge):
        region_meta_to_pb(body.target, resp.merge.target)
    elif isinstance(body, SplitRegion):
        resp.split_region.policy = int(body.policy)  # type: ignore[assignment]
        resp.split_region.keys.extend(body.keys)
    return resp


def command_from_pb(resp: pdpb_pb2.RegionHeartbeatResponse) -> RegionCommand | None:
    """Decode a scheduling command (None for keep-alives and errors)."""
    from pdcore.domain.commands import ConfChangeType, SplitPolicy

    body: ChangePeer | ChangePeerV2 | TransferLeader | Merge | SplitRegion
    if resp.HasField("change_peer"):
        body = ChangePeer(
            ConfChangeType(resp.change_peer.change_type), peer_from_pb(resp.change_peer.peer)
        )
    elif resp.HasField("change_peer_v2"):
        body = ChangePeerV2(
            tuple(
                ChangePeer(ConfChangeType(c.change_type), peer_from_pb(c.peer))
                for c in resp.change_peer_v2.changes
            )
        )
    elif resp.HasField("transfer_leader"):
        body = TransferLeader(
            peer_from_pb(resp.transfer_leader.peer),
            tuple(peer_from_pb(p) for p in resp.transfer_leader.peers),
        )
    elif resp.HasField("merge"):
        body = Merge(region_meta_from_pb(resp.merge.target))
    elif resp.HasField("split_region"):
        body = SplitRegion(SplitPolicy(resp.split_region.policy), tuple(resp.split_region.keys))
    else:
        return None
    return RegionCommand(
        region_id=resp.region_id,
        epoch=RegionEpoch(resp.region_epoch.conf_ver, resp.region_epoch.version),
        target_peer=peer_from_pb(resp.target_peer) if resp.HasField("target_peer") else None,
        body=body,
    )
