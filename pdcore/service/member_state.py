"""MemberState: what every service of one PD member reads of the member as a whole.

`PdNode` is a façade over services with one job each (TSO, IDs, stores, region ingest,
GC safe points, global config). They share this one object, not each other: the ports
to durable metadata and time, the cluster config in force, whether this member may
serve writes (the pd-leader gate), whether the cluster is bootstrapped, the scheduling
service heartbeats feed, and the counters the metrics read. The façade's attributes of
the same names read and write it, so a change (a watched config, a test's clock) is
seen by every service at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pdcore.domain.cluster import ClusterMeta
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import NotBootstrapped, NotLeader, PdError, TransportError
from pdcore.ports import Clock, MetaStore
from pdcore.service.scheduling import SchedulingService

log = logging.getLogger("kubepd.node")


@dataclass(slots=True)
class NodeStats:
    region_heartbeats: int = 0
    region_heartbeats_unchanged: int = 0
    region_heartbeats_rejected: int = 0
    store_heartbeats: int = 0
    tso_requests: int = 0
    tso_timestamps: int = 0
    ids_allocated: int = 0
    regions_flushed: int = 0
    # heartbeat stream read loops that failed, not by the client going away, by stream
    stream_errors: dict[str, int] = field(default_factory=dict)


@dataclass
class MemberState:
    meta: MetaStore
    clock: Clock
    config: ClusterConfig
    is_leader: Callable[[], bool]
    stats: NodeStats = field(default_factory=NodeStats)
    cluster: ClusterMeta | None = None  # None until bootstrapped
    # The scheduler role's scheduling API where this process hosts it: heartbeats feed
    # it, and PD's scheduling RPCs (GetOperator, ScatterRegion, ...) use it.
    scheduling: SchedulingService | None = None

    def check_serving(self) -> None:
        if not self.is_leader():
            raise NotLeader()

    def require_bootstrapped(self) -> ClusterMeta:
        if self.cluster is None:
            raise NotBootstrapped()
        return self.cluster


class RetryLog:
    """A background task's repeated failure: logged when it starts (with a traceback
    only for a bug) and when it ends, not on every retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def failed(self, e: Exception) -> None:
        self.count += 1
        if self.count == 1:
            log.warning(
                "%s failed: %s; retrying",
                self.what,
                e,
                exc_info=not isinstance(e, PdError | TransportError | OSError),
            )

    def ok(self) -> None:
        if self.count:
            log.info("%s works again after %d failed attempts", self.what, self.count)
            self.count = 0
