"""Plain-JSON forms of durable domain values, shared by LocalStore and KubeStore.

Keys and other bytes are hex strings so the documents stay readable (and valid
Kubernetes object fields).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdcore.domain.gc import GcState, ServiceSafePoint
from pdcore.domain.keyspace import Keyspace, KeyspaceState
from pdcore.domain.region import FlowStats, Peer, PeerRole, PeerStats, Region, RegionEpoch
from pdcore.domain.store import NodeState, Store, StoreState
from pdcore.scheduling import rule_config
from pdcore.scheduling.rule_config import RuleSet

Json = dict[str, Any]


def peer_to_json(p: Peer) -> list[int]:
    return [p.id, p.store_id, int(p.role), int(p.is_witness)]


def peer_from_json(v: list[int]) -> Peer:
    return Peer(int(v[0]), int(v[1]), PeerRole(int(v[2])), bool(v[3]) if len(v) > 3 else False)


def region_to_json(r: Region) -> Json:
    return {
        "id": r.id,
        "start": r.start_key.hex(),
        "end": r.end_key.hex(),
        "epoch": [r.epoch.conf_ver, r.epoch.version],
        "peers": [peer_to_json(p) for p in r.peers],
        "leader": peer_to_json(r.leader) if r.leader else None,
        "down": [[peer_to_json(d.peer), d.down_seconds] for d in r.down_peers],
        "pending": [peer_to_json(p) for p in r.pending_peers],
        "size": r.approximate_size,
        "keys": r.approximate_keys,
        "term": r.term,
    }


def region_from_json(d: Json) -> Region:
    return Region(
        id=int(d["id"]),
        start_key=bytes.fromhex(d["start"]),
        end_key=bytes.fromhex(d["end"]),
        epoch=RegionEpoch(int(d["epoch"][0]), int(d["epoch"][1])),
        peers=tuple(peer_from_json(p) for p in d["peers"]),
        leader=peer_from_json(d["leader"]) if d.get("leader") else None,
        down_peers=tuple(PeerStats(peer_from_json(p), int(s)) for p, s in d.get("down", [])),
        pending_peers=tuple(peer_from_json(p) for p in d.get("pending", [])),
        approximate_size=int(d.get("size", 0)),
        approximate_keys=int(d.get("keys", 0)),
        flow=FlowStats(),
        term=int(d.get("term", 0)),
    )


def store_to_json(s: Store) -> Json:
    return {
        "id": s.id,
        "address": s.address,
        "state": int(s.state),
        "node_state": int(s.node_state),
        "labels": [[k, v] for k, v in s.labels],
        "version": s.version,
        "peer_address": s.peer_address,
        "status_address": s.status_address,
        "git_hash": s.git_hash,
        "start_timestamp": s.start_timestamp,
        "deploy_path": s.deploy_path,
        "last_heartbeat": s.last_heartbeat_ns,
        "physically_destroyed": s.physically_destroyed,
    }


def store_from_json(d: Json) -> Store:
    return Store(
        id=int(d["id"]),
        address=str(d["address"]),
        state=StoreState(int(d.get("state", 0))),
        node_state=NodeState(int(d.get("node_state", 0))),
        labels=tuple((str(k), str(v)) for k, v in d.get("labels", [])),
        version=str(d.get("version", "")),
        peer_address=str(d.get("peer_address", "")),
        status_address=str(d.get("status_address", "")),
        git_hash=str(d.get("git_hash", "")),
        start_timestamp=int(d.get("start_timestamp", 0)),
        deploy_path=str(d.get("deploy_path", "")),
        last_heartbeat_ns=int(d.get("last_heartbeat", 0)),
        physically_destroyed=bool(d.get("physically_destroyed", False)),
    )


def meta_to_json(m: ClusterMeta) -> Json:
    return {"id": m.id, "max_peer_count": m.max_peer_count}


def meta_from_json(d: Json) -> ClusterMeta:
    return ClusterMeta(int(d["id"]), int(d.get("max_peer_count", 3)))


def gc_to_json(g: GcState) -> Json:
    return {
        "safe_point": g.safe_point,
        "services": [
            {"id": s.service_id.hex(), "safe_point": s.safe_point, "expire_at": s.expire_at_s}
            for s in g.services.values()
        ],
    }


def gc_from_json(d: Json) -> GcState:
    g = GcState(safe_point=int(d.get("safe_point", 0)))
    for s in d.get("services", []):
        sid = bytes.fromhex(s["id"])
        g.services[sid] = ServiceSafePoint(sid, int(s["safe_point"]), int(s["expire_at"]))
    return g


def config_to_json(c: ClusterConfig) -> Json:
    return {
        "schedule": dataclasses.asdict(c.schedule),
        "replication": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(c.replication).items()
        },
    }


def config_from_json(d: Json) -> ClusterConfig:
    sched_fields = {f.name for f in dataclasses.fields(ScheduleConfig)}
    repl_fields = {f.name for f in dataclasses.fields(ReplicationConfig)}
    sched = {k: v for k, v in d.get("schedule", {}).items() if k in sched_fields}
    repl = {k: v for k, v in d.get("replication", {}).items() if k in repl_fields}
    if "location_labels" in repl:
        repl["location_labels"] = tuple(repl["location_labels"])
    return ClusterConfig(ScheduleConfig(**sched), ReplicationConfig(**repl))


def keyspace_to_json(k: Keyspace) -> Json:
    """PD's JSON shape of a keyspace (its HTTP API answers the same)."""
    return {
        "id": k.id,
        "name": k.name,
        "state": k.state.name,
        "created_at": k.created_at,
        "state_changed_at": k.state_changed_at,
        "config": dict(k.config),
    }


def keyspace_from_json(d: Json) -> Keyspace:
    return Keyspace(
        id=int(d["id"]),
        name=str(d["name"]),
        state=KeyspaceState[d.get("state", "ENABLED")],
        created_at=int(d.get("created_at", 0)),
        state_changed_at=int(d.get("state_changed_at", 0)),
        config={str(k): str(v) for k, v in (d.get("config") or {}).items()},
    )


def rules_to_json(rules: RuleSet) -> Json:
    """Rules and configured groups in PD's own JSON."""
    return {
        "rules": [rule_config.rule_to_json(r) for r in rules.rules.values()],
        "groups": [rule_config.group_to_json(g) for g in rules.groups.values()],
    }


def rules_from_json(data: Json) -> RuleSet:
    return RuleSet.of(
        (rule_config.rule_from_json(r) for r in data.get("rules", [])),
        (rule_config.group_from_json(g) for g in data.get("groups", [])),
    )
