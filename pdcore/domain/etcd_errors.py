"""The errors of kubepd's etcd v3 API, with etcd's own messages.

Clients match these strings (the Go client turns them back into its typed errors), so
the messages are etcd's verbatim; the gRPC adapter maps each kind to etcd's status code.
"""

from __future__ import annotations

import enum


class EtcdErrorKind(enum.Enum):
    EMPTY_KEY = "etcdserver: key is not provided"
    KEY_NOT_FOUND = "etcdserver: key not found"
    VALUE_PROVIDED = "etcdserver: value is provided"
    LEASE_PROVIDED = "etcdserver: lease is provided"
    TOO_MANY_OPS = "etcdserver: too many operations in txn request"
    DUPLICATE_KEY = "etcdserver: duplicate key given in txn request"
    INVALID_SORT = "etcdserver: invalid sort option"
    COMPACTED = "etcdserver: mvcc: required revision has been compacted"
    FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"
    LEASE_NOT_FOUND = "etcdserver: requested lease not found"
    LEASE_EXIST = "etcdserver: lease already exists"
    LEASE_TTL_TOO_LARGE = "etcdserver: too large lease TTL"
    REQUEST_TOO_LARGE = "etcdserver: request is too large"
    NO_SPACE = "etcdserver: mvcc: database space exceeded"
    INVALID_VALUE = "etcdserver: invalid value"  # kubepd: a PD key got a value PD cannot use


class EtcdError(Exception):
    def __init__(self, kind: EtcdErrorKind, detail: str = "") -> None:
        super().__init__(kind.value + (f" ({detail})" if detail else ""))
        self.kind = kind
        self.message = str(self)
