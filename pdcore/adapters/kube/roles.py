"""The two roles of a cluster and who holds them (ARCHITECTURE §2).

* `pd-leader` (`<cluster>-pd-leader`): every sidecar is a candidate; the holder serves
  TSO, IDs and metadata writes.
* `scheduler` (`<cluster>-scheduler`): normally the operator (a `preferred` candidate).
  The pd-leader is the fallback: it takes the role only while it is the pd-leader and
  the Lease is free or expired, and gives it back as soon as the operator asks for it
  (the hand-over annotations, see `lease`). It also lets go when it stops being the
  pd-leader, so a deposed leader never keeps scheduling.
"""

from __future__ import annotations

from collections.abc import Callable

from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.lease import LeaseRole
from pdcore.ports import Clock

PD_LEADER = "pd-leader"
SCHEDULER = "scheduler"


def lease_name(cluster: str, role: str) -> str:
    return f"{cluster}-{role}"


def pd_leader(
    client: KubeClient,
    namespace: str,
    cluster: str,
    identity: str,
    *,
    lease_duration_s: float = 5.0,
    renew_period_s: float = 1.0,
    clock: Clock | None = None,
    on_change: Callable[[bool], None] | None = None,
) -> LeaseRole:
    """A sidecar's candidacy for pd-leader (not started)."""
    return LeaseRole(
        client,
        namespace,
        lease_name(cluster, PD_LEADER),
        identity,
        lease_duration_s,
        renew_period_s,
        clock,
        on_change=on_change,
    )


def scheduler_fallback(
    client: KubeClient,
    namespace: str,
    cluster: str,
    identity: str,
    leader: LeaseRole,
    *,
    lease_duration_s: float = 5.0,
    renew_period_s: float = 1.0,
    clock: Clock | None = None,
    on_change: Callable[[bool], None] | None = None,
) -> LeaseRole:
    """The pd-leader's fallback claim on the scheduler role, started: held only while
    `leader` is held and nobody else holds (or asked for) the scheduler Lease."""
    role = LeaseRole(
        client,
        namespace,
        lease_name(cluster, SCHEDULER),
        identity,
        lease_duration_s,
        renew_period_s,
        clock,
        on_change=on_change,
        yield_to_preferred=True,
    )
    role.start(may_acquire=leader.is_held)
    return role


def scheduler_preferred(
    client: KubeClient,
    namespace: str,
    cluster: str,
    identity: str,
    *,
    lease_duration_s: float = 5.0,
    renew_period_s: float = 1.0,
    clock: Clock | None = None,
    on_change: Callable[[bool], None] | None = None,
) -> LeaseRole:
    """The operator's claim on the scheduler role, started: asks a fallback holder to
    hand it over, and never yields to anyone."""
    role = LeaseRole(
        client,
        namespace,
        lease_name(cluster, SCHEDULER),
        identity,
        lease_duration_s,
        renew_period_s,
        clock,
        on_change=on_change,
        preferred=True,
        yield_to_preferred=False,
    )
    role.start()
    return role
