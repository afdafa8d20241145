"""Pure translation between kubepd's custom resources and domain values (no I/O), so the
shapes KubeStore writes and reads are tested without an API server.

* a `Store` becomes a TiKVStore: identity, labels and PD's metadata in `spec` (changes
  rarely), state and statistics in `status` (written at a bounded rate). The heartbeat
  time lives in status, rounded down to the second, so a heartbeat never rewrites spec.
* a PlacementRule object becomes a scheduling `Rule`; a TiKVCluster's `schedule`
  (PD's dashed keys) and `replication` become a `ClusterConfig`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pdcore.adapters.storage import serde
from pdcore.domain.config import (
    ClusterConfig,
    ReplicationConfig,
    ScheduleConfig,
    update_from_pd_json,
)
from pdcore.domain.errors import InvalidValue
from pdcore.domain.keyspace import Keyspace, KeyspaceState
from pdcore.domain.region import Region
from pdcore.domain.store import NodeState, Store, StoreState
from pdcore.scheduling.rules import LabelConstraint, Rule

Obj = dict[str, Any]

STATE_NAMES = {
    StoreState.UP: "Up",
    StoreState.OFFLINE: "Offline",
    StoreState.TOMBSTONE: "Tombstone",
}
NODE_STATE_NAMES = {
    NodeState.PREPARING: "Preparing",
    NodeState.SERVING: "Serving",
    NodeState.REMOVING: "Removing",
    NodeState.REMOVED: "Removed",
}
# TiKVCluster.spec.replication (camelCase, like the rest of the spec) -> PD's dashed keys.
REPLICATION_KEYS = {
    "maxReplicas": "max-replicas",
    "locationLabels": "location-labels",
    "isolationLevel": "isolation-level",
    "strictlyMatchLabel": "strictly-match-label",
    "enablePlacementRules": "enable-placement-rules",
}


# -- time and sizes ---------------------------------------------------------------------
def format_time(t: float, micro: bool = False) -> str:
    """RFC 3339 UTC: seconds (Time) or microseconds (MicroTime, as Leases use)."""
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> float:
    """Seconds since the epoch from RFC 3339 (any fraction, Z or an offset)."""
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def quantity(n_bytes: int) -> str:
    """Bytes as a Kubernetes quantity people can read at a glance: 1.5Ti, 931Gi, 0."""
    value, unit = float(n_bytes), ""
    for u in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
        if value < 1024:
            break
        value, unit = value / 1024, u
    text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
    return text + unit


def condition(
    type_: str, ok: bool, reason: str, message: str, now_s: float, previous: list[Obj] | None
) -> Obj:
    """A status condition; its lastTransitionTime moves only when its status changes."""
    status = "True" if ok else "False"
    since = now_s
    for c in previous or []:
        if c.get("type") == type_ and c.get("status") == status and c.get("lastTransitionTime"):
            since = parse_time(str(c["lastTransitionTime"]))
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(since),
    }


# -- stores -----------------------------------------------------------------------------
def store_name(cluster: str, store_id: int) -> str:
    return f"{cluster}-store-{store_id}"


INT64_MAX = (1 << 63) - 1


def check_int64_ids(store: Store | None = None, region: Region | None = None) -> None:
    """Kubernetes objects hold integers as int64 (a larger JSON number would come back
    rounded): ids above that are refused before anything is written."""
    ids = [("store", store.id)] if store is not None else []
    if region is not None:
        ids += [("region", region.id)] + [("peer", p.id) for p in region.peers]
    for what, value in ids:
        if value > INT64_MAX:
            raise InvalidValue(
                f"invalid request: {what} id {value} does not fit in a Kubernetes object "
                f"(int64, at most {INT64_MAX})"
            )


def store_spec(cluster: str, store: Store) -> Obj:
    check_int64_ids(store=store)
    meta = serde.store_to_json(store)
    meta.pop("last_heartbeat", None)  # status carries it, so heartbeats never touch spec
    spec: Obj = {
        "cluster": cluster,
        "storeID": store.id,
        "address": store.address,
        "labels": dict(store.labels),
        "desiredState": "Up" if store.is_up else "Offline",
        "meta": meta,
    }
    if store.status_address:
        spec["statusAddress"] = store.status_address
    if store.version:
        spec["version"] = store.version
    return spec


def store_status(store: Store, now_s: float, previous: list[Obj] | None = None) -> Obj:
    st = store.stats
    serving = store.is_up and store.node_state == NodeState.SERVING
    message = {
        NodeState.PREPARING: "store is up and preparing (catching up on regions)",
        NodeState.SERVING: "store is serving",
        NodeState.REMOVING: "store is offline: its regions are moving away",
        NodeState.REMOVED: "store is tombstone",
    }[store.node_state]
    status: Obj = {
        "state": STATE_NAMES[store.state],
        "nodeState": NODE_STATE_NAMES[store.node_state],
        "regionCount": st.region_count,
        "conditions": [
            condition(
                "Ready", serving, NODE_STATE_NAMES[store.node_state], message, now_s, previous
            )
        ],
    }
    if st.capacity:
        status["capacity"] = quantity(st.capacity)
        status["available"] = quantity(st.available)
    if store.last_heartbeat_ns:
        status["lastHeartbeat"] = format_time(store.last_heartbeat_ns // 1_000_000_000)
    return status


def status_key(status: Obj) -> tuple[str, str]:
    """What makes a status write urgent (not held back by the rate bound)."""
    return str(status.get("state", "")), str(status.get("nodeState", ""))


def store_from_object(obj: Obj) -> Store | None:
    """The store PD persisted in a TiKVStore, with its heartbeat time from status; None
    for an object kubepd did not write."""
    spec = obj.get("spec", {})
    meta = spec.get("meta")
    if not meta:
        return None
    heartbeat = obj.get("status", {}).get("lastHeartbeat")
    data = dict(meta)
    if heartbeat:
        data["last_heartbeat"] = int(parse_time(str(heartbeat))) * 1_000_000_000
    return serde.store_from_json(data)


# -- rules and config -------------------------------------------------------------------
def rule_from_object(obj: Obj) -> Rule:
    """A PlacementRule object as a scheduling Rule; ValueError says what is wrong."""
    spec = obj.get("spec", {})
    name = str(obj.get("metadata", {}).get("name", ""))
    return Rule(
        group_id=str(spec.get("groupID", "pd")),
        id=str(spec.get("id") or name),
        index=int(spec.get("index", 0)),
        override=bool(spec.get("override", False)),
        start_key=bytes.fromhex(spec.get("startKey", "")),
        end_key=bytes.fromhex(spec.get("endKey", "")),
        role=str(spec.get("role", "voter")),
        count=int(spec.get("count", 3)),
        label_constraints=tuple(
            LabelConstraint(str(c["key"]), str(c["op"]), tuple(str(v) for v in c.get("values", [])))
            for c in spec.get("labelConstraints", [])
        ),
        location_labels=tuple(str(x) for x in spec.get("locationLabels", [])),
        isolation_level=str(spec.get("isolationLevel", "")),
    )


def config_from_cluster(obj: Obj) -> ClusterConfig:
    """PD's config from a TiKVCluster: PD's defaults, then the keys the spec sets.
    ValueError names a key PD does not know or a value of the wrong type."""
    spec = obj.get("spec", {})
    schedule = update_from_pd_json(ScheduleConfig(), dict(spec.get("schedule", {})))
    repl_spec = spec.get("replication", {})
    unknown = set(repl_spec) - set(REPLICATION_KEYS)
    if unknown:
        raise ValueError(f"unknown replication item {sorted(unknown)[0]!r}")
    replication = update_from_pd_json(
        ReplicationConfig(), {REPLICATION_KEYS[k]: v for k, v in repl_spec.items()}
    )
    assert isinstance(schedule, ScheduleConfig) and isinstance(replication, ReplicationConfig)
    return ClusterConfig(schedule, replication)


def keyspace_spec(cluster: str, k: Keyspace) -> Obj:
    """A Keyspace object's spec (camelCase, like the other kinds)."""
    return {
        "cluster": cluster,
        "id": k.id,
        "name": k.name,
        "state": k.state.name,
        "createdAt": k.created_at,
        "stateChangedAt": k.state_changed_at,
        "config": dict(k.config),
    }


def keyspace_from_object(obj: Obj) -> Keyspace:
    spec = obj.get("spec") or {}
    return Keyspace(
        id=int(spec["id"]),
        name=str(spec["name"]),
        state=KeyspaceState[spec.get("state", "ENABLED")],
        created_at=int(spec.get("createdAt", 0)),
        state_changed_at=int(spec.get("stateChangedAt", 0)),
        config={str(k): str(v) for k, v in (spec.get("config") or {}).items()},
    )
