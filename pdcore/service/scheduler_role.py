"""SchedulerRole: the scheduler role, assembled once for every host.

A host (the embedded server, a sidecar, the scheduler host) only chooses the adapters
behind the ports: the cluster view with ID allocation, the sink operator steps go to,
the clock, the gate that says whether this process holds the role (and whether it may
write store metadata), and the catalog that compiles policy modules. The role owns the
scheduling service (the typed scheduling API every adapter uses), one policy service
and the one admission function for policies' proposals.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from pdcore.policy.abi import Proposal
from pdcore.ports import Clock, StepSink
from pdcore.service.policies import PolicyService, admit
from pdcore.service.scheduling import SCHEDULE_TICK_S, NodeView, SchedulingService

log = logging.getLogger("kubepd.scheduler_role")

RoleGate = Callable[[], bool]


class PolicyCatalog(Protocol):
    """Where policy modules are compiled (pdcore.adapters.wasm.host.WasmHost)."""

    def close(self) -> None: ...


class SchedulerRole:
    def __init__(
        self,
        view: NodeView,
        sink: StepSink,
        clock: Clock,
        *,
        holds: RoleGate | None = None,
        writes_metadata: RoleGate | None = None,
        catalog: PolicyCatalog | None = None,
        rng: random.Random | None = None,
        tick_s: float = SCHEDULE_TICK_S,
    ) -> None:
        # `holds`: this process holds the scheduler role now; `writes_metadata`: it may
        # write store metadata (bury empty offline stores) — the pd-leader does.
        self.scheduling = SchedulingService(
            view,
            sink,
            clock,
            view.config,
            rng=rng,
            active=holds,
            may_bury=writes_metadata,
            tick_s=tick_s,
        )
        self.catalog = catalog
        # Cluster-scoped policies of the embedded server's HTTP API; the Kubernetes hosts
        # run theirs from SchedulingPolicy objects (adapters/kube/scheduling_policies.py).
        self.policies: PolicyService | None = (
            PolicyService(self.scheduling) if catalog is not None else None
        )

    def active(self) -> bool:
        return self.scheduling.active()

    def admit(self, policy: str, proposal: Proposal) -> tuple[bool, str]:
        """A policy's proposal, local or from a sidecar: validated like a built-in
        scheduler's decision, then an operator; (accepted, why not)."""
        return admit(self.scheduling, policy, proposal)

    def start(self) -> None:
        self.scheduling.start()
        if self.policies is not None:
            self.policies.start()

    async def stop(self) -> None:
        if self.policies is not None:
            await self.policies.stop()
        await self.scheduling.stop()
        if self.catalog is not None:
            self.catalog.close()
