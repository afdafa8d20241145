"""Cluster configuration with PD's defaults (shared/reference/pd-scheduling.md §1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    max_replicas: int = 3
    location_labels: tuple[str, ...] = ()
    isolation_level: str = ""
    strictly_match_label: bool = False
    enable_placement_rules: bool = True


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    leader_schedule_limit: int = 4
    region_schedule_limit: int = 2048
    replica_schedule_limit: int = 64
    merge_schedule_limit: int = 8
    hot_region_schedule_limit: int = 4
    max_merge_region_size: int = 54  # MiB
    max_merge_region_keys: int = 540_000
    split_merge_interval_s: float = 3600.0
    max_snapshot_count: int = 64
    max_pending_peer_count: int = 64
    max_store_down_time_s: float = 1800.0
    patrol_region_interval_s: float = 0.01
    tolerant_size_ratio: float = 0.0
    low_space_ratio: float = 0.8
    high_space_ratio: float = 0.7
    region_score_formula_version: str = "v2"
    leader_schedule_policy: str = "count"
    store_limit_add_peer: float = 15.0  # per store per minute
    store_limit_remove_peer: float = 15.0
    hot_region_cache_hits_threshold: int = 3
    scheduler_max_waiting_operator: int = 5
    enable_remove_down_replica: bool = True
    enable_replace_offline_replica: bool = True
    enable_make_up_replica: bool = True
    enable_remove_extra_replica: bool = True
    enable_location_replacement: bool = True
    enable_joint_consensus: bool = True
    enable_one_way_merge: bool = False
    enable_cross_table_merge: bool = True
    halt_scheduling: bool = False
    max_store_preparing_time_s: float = 48 * 3600.0


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)


def to_pd_json(cfg: ScheduleConfig | ReplicationConfig) -> dict[str, Any]:
    """Config as PD's HTTP API spells it: dashed keys; `_s` fields as seconds."""
    out: dict[str, Any] = {}
    for k, v in asdict(cfg).items():
        out[k.replace("_", "-")] = list(v) if isinstance(v, tuple) else v
    return out


def update_from_pd_json(
    cfg: ScheduleConfig | ReplicationConfig, changes: dict[str, Any]
) -> ScheduleConfig | ReplicationConfig:
    """Apply a partial update in PD's dashed spelling; unknown keys or wrong types
    raise ValueError naming the key, and nothing is applied."""
    known = {f.name: f for f in fields(cfg)}
    updates: dict[str, Any] = {}
    for key, value in changes.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"unknown config item {key!r}")
        current = getattr(cfg, name)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be a boolean")
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a non-negative integer")
        elif isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
            value = float(value)
        elif isinstance(current, tuple):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"{key} must be a list of strings")
            value = tuple(value)
        elif isinstance(current, str) and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        updates[name] = value
    new = replace(cfg, **updates)
    validate(new)
    return new


def validate(cfg: ScheduleConfig | ReplicationConfig | ClusterConfig) -> None:
    """The cross-field rules PD checks before it accepts a config; ValueError says
    which rule failed. Every path that sets a config (HTTP, the TiKVCluster, storage)
    goes through this, so a config no scheduler can run with is never in force."""
    if isinstance(cfg, ClusterConfig):
        validate(cfg.schedule)
        validate(cfg.replication)
    elif isinstance(cfg, ReplicationConfig):
        if cfg.max_replicas < 1:
            raise ValueError(f"max-replicas must be at least 1, got {cfg.max_replicas}")
        if cfg.isolation_level and cfg.isolation_level not in cfg.location_labels:
            raise ValueError(
                f"isolation-level {cfg.isolation_level!r} must be one of location-labels "
                f"{list(cfg.location_labels)}"
            )
    else:
        for key in ("low_space_ratio", "high_space_ratio"):
            if not 0 <= getattr(cfg, key) <= 1:
                raise ValueError(f"{key.replace('_', '-')} should be between 0 and 1")
        if cfg.high_space_ratio > cfg.low_space_ratio:
            raise ValueError("high-space-ratio should be smaller than low-space-ratio")
        if cfg.leader_schedule_policy not in ("count", "size"):
            raise ValueError(
                f"leader-schedule-policy {cfg.leader_schedule_policy!r} must be count or size"
            )
        if cfg.region_score_formula_version not in ("v1", "v2"):
            raise ValueError(
                f"region-score-formula-version {cfg.region_score_formula_version!r} "
                "must be v1 or v2"
            )
