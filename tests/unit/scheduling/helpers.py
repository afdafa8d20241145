"""Small builders for scheduling tests."""

from __future__ import annotations

import itertools

from pdcore.domain.config import ClusterConfig, ReplicationConfig, ScheduleConfig
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store, StoreStats
from pdcore.scheduling.cluster import MemoryCluster

NOW = 1_000_000.0
GIB = 1 << 30


def store(
    sid: int,
    zone: str = "",
    up: bool = True,
    offline: bool = False,
    hb_age: float = 1.0,
    capacity_gib: int = 1000,
    available_gib: int = 900,
    **labels: str,
) -> Store:
    lab = dict(labels)
    if zone:
        lab["zone"] = zone
    s = Store(
        sid,
        f"s{sid}:1",
        labels=tuple(sorted(lab.items())),
        last_heartbeat_ns=int((NOW - hb_age) * 1e9) if up else 1,
        stats=StoreStats(
            capacity=capacity_gib * GIB,
            available=available_gib * GIB,
            used_size=(capacity_gib - available_gib) * GIB,
        ),
    )
    if offline:
        from pdcore.domain.store import StoreState

        s = s.with_state(StoreState.OFFLINE)
    return s


_ids = itertools.count(1000)


def region(
    rid: int,
    stores: list[int],
    leader: int | None = None,
    start: bytes | None = None,
    end: bytes | None = None,
    size: int = 96,
    conf: int = 1,
    ver: int = 1,
) -> Region:
    peers = tuple(Peer(rid * 100 + s, s) for s in stores)
    lead = leader if leader is not None else stores[0]
    return Region(
        rid,
        start if start is not None else b"r%06d" % rid,
        end if end is not None else b"r%06d" % (rid + 1),
        RegionEpoch(conf, ver),
        peers,
        leader=next(p for p in peers if p.store_id == lead),
        approximate_size=size,
        approximate_keys=size * 10_000,
    )


def cluster(stores: list[Store], regions: list[Region], **sched: object) -> MemoryCluster:
    repl = {k: sched.pop(k) for k in list(sched) if k in ("max_replicas", "location_labels")}
    c = MemoryCluster(config=ClusterConfig(ScheduleConfig(**sched), ReplicationConfig(**repl)))  # type: ignore[arg-type]
    c.add_stores(stores)
    for r in regions:
        c.tree.put(r)
    return c


def id_source() -> object:
    return lambda: next(_ids)
