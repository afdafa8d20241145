"""etcd leases: a TTL granted to an id, renewed by keep-alives, and the keys attached.

Times are the caller's monotonic seconds (the pd-leader's clock). Only id and granted
TTL are durable: like etcd after a leader change, a restored lease gets a full TTL
from the moment it is restored, so no lease expires because its holder was away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind

MIN_TTL_S = 2  # etcd's floor with its default election timeout (1s)
MAX_TTL_S = 9_000_000_000  # etcd's MaxLeaseTTL


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int  # as granted, seconds
    expiry: float  # monotonic seconds
    keys: set[bytes] = field(default_factory=set)

    def remaining(self, now: float) -> int:
        return max(0, math.ceil(self.expiry - now))


class LeaseTable:
    def __init__(self) -> None:
        self.leases: dict[int, Lease] = {}

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self.leases

    @staticmethod
    def check_grant(ttl: int) -> int:
        """The TTL a grant of `ttl` seconds gets (etcd raises tiny TTLs to its floor)."""
        if ttl > MAX_TTL_S:
            raise EtcdError(EtcdErrorKind.LEASE_TTL_TOO_LARGE)
        return max(ttl, MIN_TTL_S)

    def grant(self, lease_id: int, ttl: int, now: float) -> Lease:
        ttl = self.check_grant(ttl)
        if lease_id in self.leases:
            raise EtcdError(EtcdErrorKind.LEASE_EXIST)
        lease = Lease(lease_id, ttl, now + ttl)
        self.leases[lease_id] = lease
        return lease

    def get(self, lease_id: int) -> Lease:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise EtcdError(EtcdErrorKind.LEASE_NOT_FOUND)
        return lease

    def revoke(self, lease_id: int) -> Lease:
        lease = self.get(lease_id)
        del self.leases[lease_id]
        return lease

    def renew(self, lease_id: int, now: float) -> Lease:
        lease = self.get(lease_id)
        lease.expiry = now + lease.ttl
        return lease

    def expired(self, now: float) -> list[int]:
        return sorted(lid for lid, lease in self.leases.items() if lease.expiry <= now)

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)
