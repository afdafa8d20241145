"""Cluster identity and bootstrap rules."""

from __future__ import annotations

from dataclasses import dataclass

from pdcore.domain.errors import InvalidValue, PdError
from pdcore.domain.region import Region, validate_region_shape
from pdcore.domain.store import Store, validate_store_shape


@dataclass(frozen=True, slots=True)
class ClusterMeta:
    """`metapb.Cluster`: written once at bootstrap."""

    id: int
    max_peer_count: int = 3


def make_cluster_id(unix_s: int, random32: int) -> int:
    """PD's shape: creation time in the high 32 bits, randomness in the low 32."""
    return ((unix_s & 0xFFFFFFFF) << 32) | (random32 & 0xFFFFFFFF)


def check_bootstrap(store: Store | None, region: Region | None) -> None:
    """The first store and region must be complete and consistent."""
    if store is None:
        raise PdError("missing store meta for bootstrap")
    if store.id == 0:
        raise PdError("invalid zero store id")
    if not store.address:
        raise PdError(f"store {store.id} has no address")
    problem = validate_store_shape(store)
    if problem:
        raise InvalidValue(problem)
    if region is None:
        raise PdError("missing region meta for bootstrap")
    if region.start_key or region.end_key:
        raise PdError("first region must cover the whole key space (empty start and end keys)")
    problem = validate_region_shape(region)
    if problem:
        raise PdError(problem)
    if len(region.peers) != 1 or region.peers[0].store_id != store.id:
        raise PdError("first region must have exactly one peer, on the bootstrap store")
