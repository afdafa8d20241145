"""Keyspaces (TiKV API v2 tenants): metadata, names, ids and the state machine, as PD
keeps them. Pure: times are passed in as unix seconds."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace

from pdcore.domain.errors import ErrorKind, InvalidValue, PdError

DEFAULT_ID = 0
DEFAULT_NAME = "DEFAULT"
MAX_ID = (1 << 24) - 1  # a keyspace id is 3 bytes of every key's prefix
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class KeyspaceState(enum.IntEnum):
    """Values of `keyspacepb.KeyspaceState`."""

    ENABLED = 0
    DISABLED = 1
    ARCHIVED = 2
    TOMBSTONE = 3


# Where each state may go (staying put is always allowed): PD's state machine.
_NEXT: dict[KeyspaceState, frozenset[KeyspaceState]] = {
    KeyspaceState.ENABLED: frozenset({KeyspaceState.DISABLED}),
    KeyspaceState.DISABLED: frozenset({KeyspaceState.ENABLED, KeyspaceState.ARCHIVED}),
    KeyspaceState.ARCHIVED: frozenset({KeyspaceState.TOMBSTONE}),
    KeyspaceState.TOMBSTONE: frozenset(),
}


class KeyspaceNotFound(PdError):
    kind = ErrorKind.ENTRY_NOT_FOUND

    def __init__(self, what: str) -> None:
        super().__init__(f"keyspace {what} does not exist")


class KeyspaceExists(PdError):
    kind = ErrorKind.DUPLICATED_ENTRY

    def __init__(self, name: str) -> None:
        super().__init__(f"keyspace {name!r} already exists")


@dataclass(frozen=True, slots=True)
class Keyspace:
    id: int
    name: str
    state: KeyspaceState = KeyspaceState.ENABLED
    created_at: int = 0
    state_changed_at: int = 0
    config: dict[str, str] = field(default_factory=dict)

    def with_state(self, state: KeyspaceState, now_s: int) -> Keyspace:
        """The keyspace moved to `state`; raises InvalidValue for a move PD forbids."""
        if state == self.state:
            return self
        if self.id == DEFAULT_ID:
            raise InvalidValue("cannot change the state of the DEFAULT keyspace")
        if state not in _NEXT[self.state]:
            raise InvalidValue(
                f"keyspace {self.name!r} cannot go from {self.state.name} to {state.name}"
            )
        return replace(self, state=state, state_changed_at=now_s)

    def with_config(self, patch: dict[str, str | None]) -> Keyspace:
        """Config with `patch` applied: a None value removes the key."""
        config = dict(self.config)
        for k, v in patch.items():
            if v is None:
                config.pop(k, None)
            else:
                config[k] = v
        return replace(self, config=config)


def default_keyspace(now_s: int) -> Keyspace:
    return Keyspace(DEFAULT_ID, DEFAULT_NAME, created_at=now_s, state_changed_at=now_s)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidValue(
            f"illegal keyspace name {name!r}: use 1 to 64 letters, digits, '_' or '-'"
        )
    return name


def check_config(config: object, *, allow_null: bool = False) -> dict[str, str | None]:
    """A config map from a request: string keys, string (or, in a patch, null) values."""
    if not isinstance(config, dict) or not all(
        isinstance(k, str) and (isinstance(v, str) or (allow_null and v is None))
        for k, v in config.items()
    ):
        kind = "strings or null" if allow_null else "strings"
        raise InvalidValue(f"keyspace config must map strings to {kind}")
    return config


def state_named(name: object) -> KeyspaceState:
    """PD's HTTP API names states in any case ("disabled", "ARCHIVED")."""
    if isinstance(name, str) and name.upper() in KeyspaceState.__members__:
        return KeyspaceState[name.upper()]
    raise InvalidValue(f"illegal keyspace state {name!r}")
