"""Errors the PD core raises, mirroring PD's two error channels.

PdError                      -- carried in ResponseHeader.error (gRPC status OK)
├── NotBootstrapped          NOT_BOOTSTRAPPED
├── AlreadyBootstrapped      ALREADY_BOOTSTRAPPED
├── StoreTombstone           STORE_TOMBSTONE
├── RegionNotFound           REGION_NOT_FOUND
├── InvalidValue             INVALID_VALUE
├── IncompatibleVersion      INCOMPATIBLE_VERSION
├── RegionsNotContainAllKeyRange
├── StorageFailed            UNKNOWN, with the storage's reason (e.g. disk full)
└── (plain PdError)          UNKNOWN: unknown store, stale epoch, bad request ...
TransportError               -- a gRPC status, "talk to someone else"
├── ClusterIdMismatch        FAILED_PRECONDITION
└── NotLeader                UNAVAILABLE
CasConflict                  -- a compare-and-swap lost; callers re-read and retry
"""

from __future__ import annotations

import enum


class ErrorKind(enum.IntEnum):
    """Values of `pdpb.ErrorType`."""

    OK = 0
    UNKNOWN = 1
    NOT_BOOTSTRAPPED = 2
    STORE_TOMBSTONE = 3
    ALREADY_BOOTSTRAPPED = 4
    INCOMPATIBLE_VERSION = 5
    REGION_NOT_FOUND = 6
    GLOBAL_CONFIG_NOT_FOUND = 7
    DUPLICATED_ENTRY = 8
    ENTRY_NOT_FOUND = 9
    INVALID_VALUE = 10
    DATA_COMPACTED = 11
    REGIONS_NOT_CONTAIN_ALL_KEY_RANGE = 12


class PdError(Exception):
    """An application error, answered in the response header."""

    kind: ErrorKind = ErrorKind.UNKNOWN

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class NotBootstrapped(PdError):
    kind = ErrorKind.NOT_BOOTSTRAPPED

    def __init__(self, message: str = "cluster is not bootstrapped") -> None:
        super().__init__(message)


class AlreadyBootstrapped(PdError):
    kind = ErrorKind.ALREADY_BOOTSTRAPPED

    def __init__(self, message: str = "cluster is already bootstrapped") -> None:
        super().__init__(message)


class StoreTombstone(PdError):
    kind = ErrorKind.STORE_TOMBSTONE


class RegionNotFound(PdError):
    kind = ErrorKind.REGION_NOT_FOUND


class InvalidValue(PdError):
    kind = ErrorKind.INVALID_VALUE


class IncompatibleVersion(PdError):
    kind = ErrorKind.INCOMPATIBLE_VERSION


class RegionsNotContainAllKeyRange(PdError):
    kind = ErrorKind.REGIONS_NOT_CONTAIN_ALL_KEY_RANGE


class StorageFailed(PdError):
    """Durable storage refused a read or write (disk full, I/O error); nothing changed."""


class StaleRegion(PdError):
    """A heartbeat older than what PD already knows; PD keeps its own copy."""


class TransportError(Exception):
    """A condition answered with a gRPC status instead of a header error."""


class ClusterIdMismatch(TransportError):
    def __init__(self, need: int, got: int) -> None:
        super().__init__(f"mismatch cluster id, need {need} but got {got}")


class NotLeader(TransportError):
    def __init__(self, message: str = "not leader") -> None:
        super().__init__(message)


class CasConflict(Exception):
    """A compare-and-swap on durable state lost a race: re-read, never overwrite."""
