"""Stores (TiKV nodes) as PD sees them: metadata from PutStore, stats from heartbeats.

`StoreState` is the legacy three-value state and `NodeState` the newer four-value one;
PD moves them together (Up <-> Preparing|Serving, Offline <-> Removing,
Tombstone <-> Removed). Disconnected and Down are derived from heartbeat age.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

DISCONNECTED_AFTER_S = 20.0
UNHEALTHY_AFTER_S = 600.0


class StoreState(enum.IntEnum):
    UP = 0
    OFFLINE = 1
    TOMBSTONE = 2


class NodeState(enum.IntEnum):
    PREPARING = 0
    SERVING = 1
    REMOVING = 2
    REMOVED = 3


NODE_STATE_OF = {
    StoreState.UP: NodeState.SERVING,
    StoreState.OFFLINE: NodeState.REMOVING,
    StoreState.TOMBSTONE: NodeState.REMOVED,
}


def store_state_of(node_state: NodeState) -> StoreState:
    if node_state in (NodeState.PREPARING, NodeState.SERVING):
        return StoreState.UP
    if node_state == NodeState.REMOVING:
        return StoreState.OFFLINE
    return StoreState.TOMBSTONE


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The parts of a store heartbeat scheduling reads. Sizes in bytes."""

    capacity: int = 0
    available: int = 0
    used_size: int = 0
    region_count: int = 0
    sending_snap_count: int = 0
    receiving_snap_count: int = 0
    applying_snap_count: int = 0
    is_busy: bool = False
    start_time: int = 0
    bytes_written: int = 0
    keys_written: int = 0
    bytes_read: int = 0
    keys_read: int = 0
    query_read: int = 0
    query_write: int = 0
    interval_s: int = 0
    slow_score: int = 0
    is_stopping: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    id: int
    address: str
    state: StoreState = StoreState.UP
    node_state: NodeState = NodeState.PREPARING
    labels: tuple[tuple[str, str], ...] = ()
    version: str = ""
    peer_address: str = ""
    status_address: str = ""
    git_hash: str = ""
    start_timestamp: int = 0
    deploy_path: str = ""
    last_heartbeat_ns: int = 0
    physically_destroyed: bool = False
    stats: StoreStats = field(default_factory=StoreStats, compare=False)

    def label(self, key: str) -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return ""

    @property
    def is_up(self) -> bool:
        return self.state == StoreState.UP

    @property
    def is_offline(self) -> bool:
        return self.state == StoreState.OFFLINE

    @property
    def is_tombstone(self) -> bool:
        return self.state == StoreState.TOMBSTONE

    def heartbeat_age_s(self, now_s: float) -> float:
        if self.last_heartbeat_ns == 0:
            return float("inf")
        return max(0.0, now_s - self.last_heartbeat_ns / 1e9)

    def is_disconnected(self, now_s: float) -> bool:
        return self.heartbeat_age_s(now_s) > DISCONNECTED_AFTER_S

    def is_down(self, now_s: float, max_down_s: float) -> bool:
        return self.heartbeat_age_s(now_s) > max_down_s

    def state_name(self, now_s: float, max_down_s: float) -> str:
        """PD's `state_name`: Up/Offline/Tombstone, or Disconnected/Down for silent Up stores."""
        if self.state == StoreState.UP:
            if self.last_heartbeat_ns and self.is_down(now_s, max_down_s):
                return "Down"
            if self.last_heartbeat_ns and self.is_disconnected(now_s):
                return "Disconnected"
            return "Up"
        return "Offline" if self.state == StoreState.OFFLINE else "Tombstone"

    def with_(self, **changes: object) -> Store:
        return replace(self, **changes)  # type: ignore[arg-type]

    def with_state(self, state: StoreState) -> Store:
        node = NODE_STATE_OF[state]
        if state == StoreState.UP and self.node_state == NodeState.PREPARING:
            node = NodeState.PREPARING
        return replace(self, state=state, node_state=node)


def parse_version(version: str) -> tuple[int, int, int] | None:
    """Parse a TiKV semver like "8.5.0" or "v8.5.0-alpha"; None if it is not one."""
    v = version.strip().lstrip("v")
    core = v.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


# Sizes a real TiKV never comes near; they keep one store's metadata small enough that
# GetAllStores for hundreds of stores fits a default 4 MiB gRPC message.
MAX_ADDRESS_LEN = 1024
MAX_TEXT_LEN = 1024
MAX_LABELS = 32
MAX_LABEL_KEY_LEN = 128
MAX_LABEL_VALUE_LEN = 256


def validate_store_shape(store: Store) -> str | None:
    """Return why a store's metadata is unacceptable, or None."""
    for name in ("address", "peer_address", "status_address"):
        if len(getattr(store, name)) > MAX_ADDRESS_LEN:
            return f"store {store.id} {name} is longer than {MAX_ADDRESS_LEN} characters"
    for name in ("version", "git_hash", "deploy_path"):
        if len(getattr(store, name)) > MAX_TEXT_LEN:
            return f"store {store.id} {name} is longer than {MAX_TEXT_LEN} characters"
    if len(store.labels) > MAX_LABELS:
        return f"store {store.id} has more than {MAX_LABELS} labels"
    for key, value in store.labels:
        if not key or len(key) > MAX_LABEL_KEY_LEN or len(value) > MAX_LABEL_VALUE_LEN:
            return (
                f"store {store.id} label {key[:MAX_LABEL_KEY_LEN]!r} must have a key of 1 to "
                f"{MAX_LABEL_KEY_LEN} characters and a value of at most {MAX_LABEL_VALUE_LEN}"
            )
    return None
