"""PolicyService: Wasm scheduling policies added, replaced and removed while PD runs.

Each policy runs on its own interval: a snapshot of the cluster is built on the event
loop, the module runs in a worker thread inside its sandbox, and every proposal is
validated like a built-in scheduler's decision before it becomes an operator. A
failing policy is handled by its failure strategy; nothing else stops.

Store-scoped policies (`propose` given) run where their store's TiKV heartbeats, over
the regions it leads, and do not validate here: the proposals go to the scheduler
role's holder (`admit` there), which alone sees every store's and the global limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pdcore.policy.abi import Proposal
from pdcore.policy.outcome import PolicyFailure, RunOutcome
from pdcore.policy.spec import FailureStrategy, PolicySpec
from pdcore.scheduling import policy_bridge
from pdcore.scheduling.cluster import ClusterView
from pdcore.service.scheduling import SchedulingService

log = logging.getLogger("kubepd.policies")
POLICY_TICK_S = 0.1  # seconds of the scheduling clock between policy runs
MAX_BACKOFF_INTERVALS = 32  # Retry waits at most this many intervals


class PolicyPhase(StrEnum):
    PENDING = "Pending"  # known, its module not loaded yet (Kubernetes only)
    LOADED = "Loaded"  # loaded, not run yet
    RUNNING = "Running"  # its last run gave proposals
    FAILED = "Failed"  # its last run failed and it runs again (Retry), or it did not load
    DISABLED = "Disabled"  # a run failed and its failure strategy (Disable) stopped it


class Sandbox(Protocol):
    """What the service needs of a loaded module (pdcore.adapters.wasm.host.PolicyInstance)."""

    digest: str

    def run(self, snapshot: bytes) -> RunOutcome: ...


@dataclass(eq=False)
class LoadedPolicy:
    """A validated spec, its sandbox, and how its runs went."""

    spec: PolicySpec
    instance: Sandbox
    phase: PolicyPhase = PolicyPhase.LOADED
    runs: int = 0
    accepted: int = 0
    rejected: int = 0
    failures: int = 0
    last_error: str = ""
    last_run_ms: float = 0.0
    next_run: float = 0.0
    rejections: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def interval_s(self) -> float:
        return self.spec.interval_s

    def status(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "phase": self.phase.value,
            "moduleDigest": self.instance.digest,
            "config": dict(spec.config),
            "intervalSeconds": spec.interval_s,
            "scope": spec.scope.value,
            "failureStrategy": spec.failure_strategy.value,
            "runs": self.runs,
            "proposalsAccepted": self.accepted,
            "proposalsRejected": self.rejected,
            "failures": self.failures,
            "lastError": self.last_error,
            "lastRunMillis": round(self.last_run_ms, 3),
            "recentRejections": list(self.rejections),
        }


# (policy, leading store, proposals) -> one (accepted, reason) per proposal
Proposer = Callable[[LoadedPolicy, int, Sequence[Proposal]], Awaitable[Sequence[tuple[bool, str]]]]
# (policy, failure): a run failed (trap, timeout, malformed output)
FailureHook = Callable[[LoadedPolicy, PolicyFailure], None]
# The cluster a store-scoped run sees: a follower sidecar's own stores lack the others'
# heartbeat figures, so it asks the pd-leader.
ViewSource = Callable[[], Awaitable[ClusterView]]


def admit(
    svc: SchedulingService, policy: str, prop: Proposal, leading_store: int | None = None
) -> tuple[bool, str]:
    """The one admission path of policy proposals, local or proposed by a sidecar:
    validate like a built-in scheduler's decision and, if it passes, make it an
    operator whose first step goes out now; (accepted, why not). `leading_store`: the
    store whose store-scoped policy proposes it, which may act only on regions it leads."""
    if leading_store is not None:
        region = svc.view.tree.get(prop.region_id)
        if region is not None and region.leader_store_id != leading_store:
            return False, f"region {prop.region_id} is not led by store {leading_store}"
    coord = svc.coordinator
    verdict = policy_bridge.validate(
        svc.view,
        coord.controller,
        prop,
        svc.now(),
        svc._take_id,
        policy,
        coord.explicit_rules,
    )
    if verdict.operator is None:
        return False, verdict.reason
    if coord.controller.add(verdict.operator, svc.now()) is not None:
        return False, "limits reached"
    svc._deliver(coord._first_send(verdict.operator, svc.now()))
    return True, ""


class PolicyService:
    def __init__(
        self,
        scheduling: SchedulingService,
        *,
        local_stores: Callable[[], set[int]] | None = None,
        propose: Proposer | None = None,
        on_failure: FailureHook | None = None,
        view: ViewSource | None = None,
    ) -> None:
        """Cluster-scoped by default: runs while `scheduling` is active. With
        `local_stores` and `propose`: store-scoped, runs while there are local stores."""
        self.scheduling = scheduling
        self.local_stores = local_stores
        self.propose = propose
        self.on_failure = on_failure
        self.view = view
        self.policies: dict[str, LoadedPolicy] = {}
        # Shared by every policy: region records do not depend on the policy, and only
        # regions changed since the last run are encoded again.
        self.encoder = policy_bridge.SnapshotEncoder()
        self._task: asyncio.Task[None] | None = None

    def active(self) -> bool:
        """Store-scoped: while there are local stores (the holder judges the proposals).
        Cluster-scoped: while the role is held and prepared, like the built-in schedulers."""
        if self.propose is not None and self.local_stores is not None:
            return bool(self.local_stores())
        return self.scheduling.scheduling_now()

    def put(self, policy: LoadedPolicy) -> None:
        """Add or replace atomically: the next tick runs the new module (its spec was
        validated when it was parsed)."""
        old = self.policies.get(policy.name)
        self.policies[policy.name] = policy
        log.info(
            "policy %s",
            "replaced" if old else "added",
            extra={"policy": policy.name, "digest": policy.instance.digest},
        )

    def remove(self, name: str) -> None:
        if self.policies.pop(name, None) is None:
            raise KeyError(f"policy {name} not found")
        log.info("policy removed", extra={"policy": name})

    def list(self) -> list[dict[str, Any]]:
        return [
            p.status()
            for p in sorted(self.policies.values(), key=lambda p: (-p.spec.priority, p.name))
        ]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="policies")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            await self.scheduling.clock.sleep(POLICY_TICK_S)
            if not self.active():
                continue
            for policy in sorted(self.policies.values(), key=lambda p: -p.spec.priority):
                now = self.scheduling.now()
                if policy.phase == PolicyPhase.DISABLED or now < policy.next_run:
                    continue
                try:
                    await self.run_once(policy)
                except Exception:
                    log.exception("policy %s tick failed", policy.name)

    async def run_once(self, policy: LoadedPolicy) -> None:
        svc = self.scheduling
        coord = svc.coordinator
        now = svc.now()
        stores = self.local_stores() if self.propose is not None and self.local_stores else None
        view = await self.view() if self.view is not None else svc.view
        snapshot = self.encoder.encode(
            view,
            coord.controller,
            now,
            dict(policy.spec.config),
            policy.spec.max_proposals,
            store_ids=stores,
        )
        result = await asyncio.to_thread(policy.instance.run, snapshot.data)
        if self.policies.get(policy.name) is not policy:
            return  # replaced or removed while it ran: drop its output
        if not self.active():
            return  # lost the role (or, store-scoped, its stores) while it ran
        policy.runs += 1
        policy.last_run_ms = result.wall_ms
        policy.next_run = svc.now() + policy.interval_s
        if isinstance(result, PolicyFailure):
            self._failed(policy, result)
            return
        policy.phase = PolicyPhase.RUNNING
        if self.propose is not None:
            await self._propose(policy, snapshot.leader_of, result.proposals)
            return
        for prop in result.proposals:
            ok, why = admit(svc, policy.name, prop)
            self._count(policy, prop, ok, why)

    def _failed(self, policy: LoadedPolicy, failure: PolicyFailure) -> None:
        policy.failures += 1
        policy.last_error = f"{failure.kind}: {failure.message}"
        log.warning(
            "policy failed",
            extra={"policy": policy.name, "kind": failure.kind, "error": failure.message},
        )
        match policy.spec.failure_strategy:
            case FailureStrategy.DISABLE:
                policy.phase = PolicyPhase.DISABLED
            case FailureStrategy.RETRY:
                backoff = min(MAX_BACKOFF_INTERVALS, 2**policy.failures)
                policy.next_run = self.scheduling.now() + policy.interval_s * backoff
                policy.phase = PolicyPhase.FAILED
            case FailureStrategy.IGNORE:
                pass  # the next interval runs it as usual
        if self.on_failure is not None:
            self.on_failure(policy, failure)

    async def _propose(
        self,
        policy: LoadedPolicy,
        leader_of: Callable[[int], int],
        proposals: Sequence[Proposal],
    ) -> None:
        """One Propose call per leading store (a sidecar may serve several); `leader_of`
        gives a region's leader in the snapshot the policy saw (0 when it was not there)."""
        assert self.propose is not None
        by_store: dict[int, list[Proposal]] = {}
        for prop in proposals:
            by_store.setdefault(leader_of(prop.region_id), []).append(prop)
        for store_id, props in sorted(by_store.items()):
            try:
                verdicts = await self.propose(policy, store_id, props)
            except Exception as e:  # the holder unreachable: nothing was admitted
                for prop in props:
                    self._count(policy, prop, False, f"not proposed: {e}")
                continue
            for prop, (ok, why) in zip(props, verdicts, strict=False):
                self._count(policy, prop, ok, why)

    @staticmethod
    def _count(policy: LoadedPolicy, prop: Proposal, ok: bool, why: str) -> None:
        if ok:
            policy.accepted += 1
        else:
            policy.rejected += 1
            policy.rejections.append(f"region {prop.region_id}: {why}")
