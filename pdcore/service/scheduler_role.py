"""SchedulerRole: the scheduler role, assembled once for every host.

A host (the embedded server, a sidecar, the scheduler host) only chooses the adapters
behind the ports: the cluster view with ID allocation, the sink operator steps go to,
the clock, the gate that says whether this process holds the role (and whether it may
write store metadata), and the catalog that compiles policy modules. The role owns the
scheduling service (the typed scheduling API every adapter uses), one policy service
and the one admission function for policies' proposals. The only other policy service,
store-scoped policies in a sidecar (which propose instead of admitting), is built here
too, so both follow the role's scheduling service and clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from pdcore.policy.abi import Proposal
from pdcore.policy.outcome import PolicyFailure
from pdcore.ports import Clock, StepSink
from pdcore.service.policies import (
    FailureHook,
    LoadedPolicy,
    PolicyService,
    Proposer,
    ViewSource,
    admit,
)
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
        # Cluster-scoped policies: the embedded server's HTTP API adds them, the
        # Kubernetes hosts from SchedulingPolicy objects (adapters/kube/scheduling_policies).
        # They run while the role is held and prepared, like the built-in schedulers.
        self._failure_hooks: list[FailureHook] = []
        self.policies: PolicyService | None = (
            PolicyService(self.scheduling, on_failure=self._policy_failed)
            if catalog is not None
            else None
        )

    def active(self) -> bool:
        return self.scheduling.active()

    def admit(
        self, policy: str, proposal: Proposal, leading_store: int | None = None
    ) -> tuple[bool, str]:
        """A policy's proposal, local or from a sidecar (`leading_store`: the store whose
        store-scoped policy proposed it): validated like a built-in scheduler's
        decision, then an operator; (accepted, why not)."""
        return admit(self.scheduling, policy, proposal, leading_store)

    def on_policy_failure(self, hook: FailureHook) -> None:
        """Tell `hook` of every failed run of a cluster-scoped policy (status, events)."""
        self._failure_hooks.append(hook)

    def _policy_failed(self, policy: LoadedPolicy, failure: PolicyFailure) -> None:
        for hook in self._failure_hooks:
            hook(policy, failure)

    def store_policies(
        self,
        *,
        local_stores: Callable[[], set[int]],
        propose: Proposer,
        view: ViewSource | None = None,
        on_failure: FailureHook | None = None,
    ) -> PolicyService:
        """A sidecar's store-scoped policies: they run while it has `local_stores`, over
        the regions those lead, and send proposals to the holder's `admit` (`propose`)."""
        return PolicyService(
            self.scheduling,
            local_stores=local_stores,
            propose=propose,
            on_failure=on_failure,
            view=view,
        )

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
