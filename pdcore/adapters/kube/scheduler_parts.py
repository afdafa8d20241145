"""The Kubernetes-only parts of the scheduler role, one bundle for both Kubernetes hosts
(the sidecar, where the pd-leader holds the role as the fallback, and the scheduler
host): RegionOperator objects, leader evictions, the TiKVCluster's status.scheduling,
Events, SchedulingPolicy objects and the Propose service for store-scoped policies.

Each part acts only while the role is held (`role.active`); the host decides where the
Propose service is served and which other parts (store-scoped policies) it adds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.cluster_status import INTERVAL_S, SchedulingStatus
from pdcore.adapters.kube.directory import SidecarDirectory
from pdcore.adapters.kube.events import EventRecorder
from pdcore.adapters.kube.evictions import LeaderEvictions
from pdcore.adapters.kube.region_operators import RegionOperatorResources
from pdcore.adapters.kube.scheduling_policies import SchedulingPolicyResources, start_policies
from pdcore.adapters.kube.store import KubeStore
from pdcore.adapters.sidecar.proposals import ProposeService
from pdcore.service.scheduler_role import SchedulerRole

if TYPE_CHECKING:
    from pdcore.adapters.wasm.host import WasmHost

log = logging.getLogger("kubepd.scheduler_parts")


class KubeSchedulerParts:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        role: SchedulerRole,
        directory: SidecarDirectory,
        *,
        holder: str,
        events: EventRecorder,
        cluster_id: Callable[[], int],
        host: WasmHost | None = None,
        candidate: Callable[[], bool] | None = None,
        status_interval_s: float = INTERVAL_S,
    ) -> None:
        # `holder`: the identity written into status.scheduling; `candidate`: whether
        # this process may take the role at all (a sidecar only as pd-leader), so that
        # others keep no policy module loaded; `host`: the Wasm host, the role's catalog
        # (None: SchedulingPolicy objects are not acted on).
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.role = role
        self.candidate = candidate
        self.host = host
        self.events = events
        svc = role.scheduling
        self.region_operators = RegionOperatorResources(
            client, namespace, cluster, svc, role.active
        )
        self.evictions = LeaderEvictions(client, namespace, cluster, directory, svc, role.active)
        self.status_report = SchedulingStatus(
            client,
            namespace,
            cluster,
            holder,
            svc.summary,
            role.active,
            interval_s=status_interval_s,
        )
        self.propose_service = ProposeService(role, cluster_id)
        self.policies: SchedulingPolicyResources | None = None

    def start(self) -> None:
        self.region_operators.start()
        self.evictions.start()
        self.status_report.start()
        self.policies = start_policies(
            self.client,
            self.namespace,
            self.cluster,
            self.role,
            self.host,
            self.candidate,
            self.events,
        )

    async def follow_rules(self, store: KubeStore, report: Callable[[], bool] | None) -> None:
        """PlacementRule objects are the rules in force, live (`report`: whether this
        process writes on each object whether it was applied)."""
        async for rules in store.watch_rules(report=report):
            self.role.scheduling.set_rules(rules or None)
            log.info("placement rules in force", extra={"rules": len(rules)})

    async def stop(self) -> None:
        await self.region_operators.stop()
        await self.evictions.stop()
        await self.status_report.stop()
        if self.policies is not None:
            await self.policies.stop()
