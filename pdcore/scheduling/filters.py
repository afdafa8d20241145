"""Store filters that return a reason, not a bool: the reasons are what answer
"why was nothing scheduled"."""

from __future__ import annotations

from dataclasses import dataclass

from pdcore.domain.config import ScheduleConfig
from pdcore.domain.store import Store
from pdcore.scheduling.scores import is_low_space

OK = ""


@dataclass(frozen=True, slots=True)
class StoreCheck:
    store_id: int
    reason: str  # empty when the store passes

    @property
    def ok(self) -> bool:
        return not self.reason


def _health(store: Store, now: float, cfg: ScheduleConfig) -> str:
    if store.is_tombstone:
        return "store is tombstone"
    if store.last_heartbeat_ns and store.is_down(now, cfg.max_store_down_time_s):
        return "store is down"
    if store.last_heartbeat_ns == 0:
        return "store has not sent a heartbeat yet"
    if store.is_disconnected(now):
        return "store is disconnected (no heartbeat for 20 s)"
    return OK


def leader_source(store: Store, now: float, cfg: ScheduleConfig) -> str:
    return _health(store, now, cfg)


def leader_target(store: Store, now: float, cfg: ScheduleConfig, evicted: set[int]) -> str:
    if r := _health(store, now, cfg):
        return r
    if store.is_offline:
        return "store is offline (draining)"
    if store.id in evicted:
        return "leaders are being evicted from this store"
    if store.stats.is_busy:
        return "store is busy"
    if store.stats.is_stopping:
        return "store is stopping"
    return OK


def region_source(store: Store, now: float, cfg: ScheduleConfig) -> str:
    if store.is_tombstone:
        return "store is tombstone"
    if store.stats.is_busy:
        return "store is busy"
    if store.stats.sending_snap_count > cfg.max_snapshot_count:
        return (
            f"store is sending {store.stats.sending_snap_count} snapshots "
            f"(max {cfg.max_snapshot_count})"
        )
    return OK


def region_target(
    store: Store, now: float, cfg: ScheduleConfig, region_count: int, pending_peers: int
) -> str:
    if r := _health(store, now, cfg):
        return r
    if store.is_offline:
        return "store is offline (draining)"
    if store.stats.is_busy:
        return "store is busy"
    if store.stats.receiving_snap_count > cfg.max_snapshot_count:
        return "store is receiving too many snapshots"
    if pending_peers > cfg.max_pending_peer_count:
        return f"store has {pending_peers} pending peers (max {cfg.max_pending_peer_count})"
    if is_low_space(store, cfg, region_count):
        return "store is low on space"
    return OK
