"""PD's config as its HTTP API spells it: key names, JSON types and defaults.

PD marshals durations as Go duration strings ("30m0s"), most booleans as the strings
"true"/"false" (`,string` tags), label lists as one comma-joined string, and integers
and ratios as numbers. This module maps each of PD's schedule and replication keys to
a field of our `ClusterConfig` and converts both ways. Keys PD has that kubepd does not
act on are shown with PD's defaults and accept only that value: a `config set` on them
answers 400 instead of pretending to take effect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig

Section = ScheduleConfig | ReplicationConfig


class ConfigError(ValueError):
    """Bad key or value; the message is what PD answers (HTTP 400)."""


# -- Go duration strings ------------------------------------------------------------
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds from a Go duration string ("30m", "1h30m0s", "10ms"); ValueError if bad."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    if s.startswith("-"):
        raise ValueError(f'time: invalid duration "{text}"')  # PD has no negative ones
    s = s.removeprefix("+")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f'time: invalid duration "{text}"')
    return total


def format_duration(seconds: float) -> str:
    """Go's `time.Duration.String()`: "30m0s", "1h0m0s", "10ms", "1.5s", "0s"."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _trim(ns / size) + unit
    h, rest = divmod(ns, 3600 * 10**9)
    m, rest = divmod(rest, 60 * 10**9)
    sec = _trim(rest / 1e9) + "s"
    if h:
        return f"{h}h{m}m{sec}"
    if m:
        return f"{m}m{sec}"
    return sec


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


# -- value kinds ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # for error messages, in Go's words
    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]  # raises ValueError


def _uint(v: Any) -> int:
    # pd-ctl sends every number as a float (strconv.ParseFloat): 64.0 is 64.
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or v != int(v):
        raise ValueError
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError
    return float(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v in ("true", "false"):
        return bool(v == "true")
    raise ValueError


def _duration(v: Any) -> float:
    if not isinstance(v, str):
        raise ValueError
    return parse_duration(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError
    return v


def _labels(v: Any) -> tuple[str, ...]:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    if isinstance(v, str):
        return tuple(v.split(",")) if v else ()
    raise ValueError


UINT = Kind("uint64", int, _uint)
FLOAT = Kind("float64", float, _float)
BOOL_STR = Kind("bool", lambda v: "true" if v else "false", _bool)
DURATION = Kind("typeutil.Duration", format_duration, _duration)
STRING = Kind("string", str, _str)
LABELS = Kind("typeutil.StringSlice", lambda v: ",".join(v), _labels)


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    kind: Kind
    field: str | None  # our field; None: shown with PD's default, not acted on
    default: Any = None


def _items(*rows: tuple[str, Kind, str | None, Any]) -> dict[str, Item]:
    return {key: Item(key, kind, f, d) for key, kind, f, d in rows}


# PD's schedule config in PD's order (pkg/schedule/config, ScheduleConfig).
SCHEDULE = _items(
    ("max-snapshot-count", UINT, "max_snapshot_count", None),
    ("max-pending-peer-count", UINT, "max_pending_peer_count", None),
    ("max-merge-region-size", UINT, "max_merge_region_size", None),
    ("max-merge-region-keys", UINT, "max_merge_region_keys", None),
    ("split-merge-interval", DURATION, "split_merge_interval_s", None),
    ("switch-witness-interval", DURATION, None, 3600.0),
    ("enable-one-way-merge", BOOL_STR, "enable_one_way_merge", None),
    ("enable-cross-table-merge", BOOL_STR, "enable_cross_table_merge", None),
    ("patrol-region-interval", DURATION, "patrol_region_interval_s", None),
    ("max-store-down-time", DURATION, "max_store_down_time_s", None),
    ("max-store-preparing-time", DURATION, "max_store_preparing_time_s", None),
    ("leader-schedule-limit", UINT, "leader_schedule_limit", None),
    ("leader-schedule-policy", STRING, "leader_schedule_policy", None),
    ("region-schedule-limit", UINT, "region_schedule_limit", None),
    ("witness-schedule-limit", UINT, None, 4),
    ("replica-schedule-limit", UINT, "replica_schedule_limit", None),
    ("merge-schedule-limit", UINT, "merge_schedule_limit", None),
    ("hot-region-schedule-limit", UINT, "hot_region_schedule_limit", None),
    ("affinity-schedule-limit", UINT, None, 0),
    ("split-scatter-schedule-limit", UINT, None, 4),
    ("hot-region-cache-hits-threshold", UINT, "hot_region_cache_hits_threshold", None),
    ("tolerant-size-ratio", FLOAT, "tolerant_size_ratio", None),
    ("low-space-ratio", FLOAT, "low_space_ratio", None),
    ("high-space-ratio", FLOAT, "high_space_ratio", None),
    ("region-score-formula-version", STRING, "region_score_formula_version", None),
    ("scheduler-max-waiting-operator", UINT, "scheduler_max_waiting_operator", None),
    ("enable-remove-down-replica", BOOL_STR, "enable_remove_down_replica", None),
    ("enable-replace-offline-replica", BOOL_STR, "enable_replace_offline_replica", None),
    ("enable-make-up-replica", BOOL_STR, "enable_make_up_replica", None),
    ("enable-remove-extra-replica", BOOL_STR, "enable_remove_extra_replica", None),
    ("enable-location-replacement", BOOL_STR, "enable_location_replacement", None),
    ("enable-debug-metrics", BOOL_STR, None, False),
    ("enable-joint-consensus", BOOL_STR, "enable_joint_consensus", None),
    ("enable-tikv-split-region", BOOL_STR, None, True),
    ("enable-heartbeat-breakdown-metrics", BOOL_STR, None, True),
    ("enable-heartbeat-concurrent-runner", BOOL_STR, None, True),
    ("hot-regions-write-interval", DURATION, None, 600.0),
    ("hot-regions-reserved-days", UINT, None, 7),
    ("max-movable-hot-peer-size", UINT, None, 512),
    ("enable-diagnostic", BOOL_STR, None, True),
    ("enable-witness", BOOL_STR, None, False),
    ("slow-store-evicting-affected-store-ratio-threshold", FLOAT, None, 0.3),
    ("store-limit-version", STRING, None, "v1"),
    ("halt-scheduling", BOOL_STR, "halt_scheduling", None),
    ("patrol-region-worker-count", UINT, None, 1),
    ("max-affinity-merge-region-size", UINT, None, 256),
)

REPLICATION = _items(
    ("max-replicas", UINT, "max_replicas", None),
    ("location-labels", LABELS, "location_labels", None),
    ("strictly-match-label", BOOL_STR, "strictly_match_label", None),
    ("enable-placement-rules", BOOL_STR, "enable_placement_rules", None),
    ("enable-placement-rules-cache", BOOL_STR, None, False),
    ("isolation-level", STRING, "isolation_level", None),
)


def _section_json(items: dict[str, Item], cfg: Section) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items.values():
        value = getattr(cfg, item.field) if item.field else item.default
        out[item.key] = item.kind.to_json(value)
    return out


def schedule_json(cfg: ClusterConfig) -> dict[str, Any]:
    out = _section_json(SCHEDULE, cfg.schedule)
    limit = {
        "add-peer": cfg.schedule.store_limit_add_peer,
        "remove-peer": cfg.schedule.store_limit_remove_peer,
    }
    out["default-store-limit"] = limit
    out["schedulers-v2"] = []  # kubepd keeps schedulers in its own list (GET /schedulers)
    out["schedulers-payload"] = None
    return out


def replication_json(cfg: ClusterConfig) -> dict[str, Any]:
    return _section_json(REPLICATION, cfg.replication)


def _apply(items: dict[str, Item], cfg: Section, changes: dict[str, Any]) -> Section:
    updates: dict[str, Any] = {}
    for key, raw in changes.items():
        item = items.get(key)
        if item is None:
            raise ConfigError(f"config item {key} not found")
        try:
            value = item.kind.from_json(raw)
        except ValueError as e:
            detail = str(e)
            raise ConfigError(
                detail
                if detail.startswith("time:")
                else f"json: cannot unmarshal {_json_type(raw)} into Go struct field "
                f".{key} of type {item.kind.name}"
            ) from None
        if item.field is None:
            if value != item.default:
                raise ConfigError(f"config item {key} is not supported by kubepd")
            continue
        updates[item.field] = value
    return replace(cfg, **updates)


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else "null"


def update_schedule(cfg: ClusterConfig, changes: dict[str, Any]) -> ClusterConfig:
    changes = dict(changes)
    limit = changes.pop("default-store-limit", None)
    changes.pop("schedulers-v2", None)  # PD's read-back shape; schedulers live elsewhere
    changes.pop("schedulers-payload", None)
    per_store = changes.pop("store-limit", None)
    sched = _apply(SCHEDULE, cfg.schedule, changes)
    assert isinstance(sched, ScheduleConfig)
    if limit is not None:
        if not isinstance(limit, dict):
            raise ConfigError("default-store-limit must be an object")
        try:
            add = _float(limit.get("add-peer", sched.store_limit_add_peer))
            remove = _float(limit.get("remove-peer", sched.store_limit_remove_peer))
        except ValueError:
            raise ConfigError("default-store-limit rates must be numbers") from None
        sched = replace(sched, store_limit_add_peer=add, store_limit_remove_peer=remove)
    if per_store is not None:  # what GET shows comes back: each store at the one limit
        one = {"add-peer": sched.store_limit_add_peer, "remove-peer": sched.store_limit_remove_peer}
        if not isinstance(per_store, dict) or any(v != one for v in per_store.values()):
            raise ConfigError("kubepd keeps one limit for all stores (default-store-limit)")
    return replace(cfg, schedule=sched)


def update_replication(cfg: ClusterConfig, changes: dict[str, Any]) -> ClusterConfig:
    repl = _apply(REPLICATION, cfg.replication, changes)
    assert isinstance(repl, ReplicationConfig)
    return replace(cfg, replication=repl)


def update_any(cfg: ClusterConfig, changes: dict[str, Any]) -> tuple[ClusterConfig, str | None]:
    """`POST /config`: keys bare ("max-replicas") or with a section prefix
    ("schedule.halt-scheduling"). Returns the new config and a new cluster version, if
    one was set. ConfigError with PD's message; nothing applies unless all do."""
    version: str | None = None
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        if not section:
            section = _section_of(name)
        if section == "schedule":
            cfg = update_schedule(cfg, {name: value})
        elif section == "replication":
            cfg = update_replication(cfg, {name: value})
        elif section == "cluster-version":
            if not isinstance(value, str):
                raise ConfigError(f"input value {value} is illegal")
            version = value
        else:
            raise ConfigError(f"config prefix {section} not found")
    return cfg, version


def _section_of(key: str) -> str:
    if key in SCHEDULE or key == "default-store-limit":
        return "schedule"
    if key in REPLICATION:
        return "replication"
    if key == "cluster-version":
        return key
    raise ConfigError(f"config item {key} not found")
