"""PolicyService: Wasm scheduling policies added, replaced and removed while PD runs.

Each policy runs on its own interval: a snapshot of the cluster is built on the event
loop, the module runs in a worker thread inside its sandbox, and every proposal is
validated like a built-in scheduler's decision before it becomes an operator. A
failing policy is handled by its failure strategy; nothing else stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from pdcore.policy.abi import encode_snapshot
from pdcore.scheduling import policy_bridge
from pdcore.service.scheduling import SchedulingService

log = logging.getLogger("kubepd.policies")
STRATEGIES = ("Disable", "Ignore", "Retry")
TICK_WALL_S = 0.1


class Sandbox(Protocol):
    """What the service needs of a loaded module (pdcore.adapters.wasm.host.PolicyInstance)."""

    digest: str

    def run(self, snapshot: bytes) -> Any: ...


@dataclass
class LoadedPolicy:
    name: str
    instance: Sandbox
    config: dict[str, Any]
    interval_s: float
    failure_strategy: str
    max_proposals: int
    scope: str = "cluster"
    priority: int = 50
    phase: str = "Loaded"
    runs: int = 0
    accepted: int = 0
    rejected: int = 0
    failures: int = 0
    last_error: str = ""
    last_run_ms: float = 0.0
    next_run: float = 0.0
    rejections: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "moduleDigest": self.instance.digest,
            "config": self.config,
            "intervalSeconds": self.interval_s,
            "scope": self.scope,
            "failureStrategy": self.failure_strategy,
            "runs": self.runs,
            "proposalsAccepted": self.accepted,
            "proposalsRejected": self.rejected,
            "failures": self.failures,
            "lastError": self.last_error,
            "lastRunMillis": round(self.last_run_ms, 3),
            "recentRejections": list(self.rejections),
        }


class PolicyService:
    def __init__(self, scheduling: SchedulingService) -> None:
        self.scheduling = scheduling
        self.policies: dict[str, LoadedPolicy] = {}
        self._task: asyncio.Task[None] | None = None

    def put(self, policy: LoadedPolicy) -> None:
        """Add or replace atomically: the next tick runs the new module."""
        if policy.failure_strategy not in STRATEGIES:
            raise ValueError(f"failure strategy must be one of {STRATEGIES}")
        if policy.interval_s <= 0:
            raise ValueError("interval must be positive")
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
            p.status() for p in sorted(self.policies.values(), key=lambda p: (-p.priority, p.name))
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
            await asyncio.sleep(TICK_WALL_S)
            if not self.scheduling.active():
                continue
            for policy in sorted(self.policies.values(), key=lambda p: -p.priority):
                now = self.scheduling.now()
                if policy.phase in ("Disabled",) or now < policy.next_run:
                    continue
                try:
                    await self.run_once(policy)
                except Exception:
                    log.exception("policy %s tick failed", policy.name)

    async def run_once(self, policy: LoadedPolicy) -> None:
        svc = self.scheduling
        coord = svc.coordinator
        now = svc.now()
        inp = policy_bridge.build_input(
            svc.view, coord.controller, now, policy.config, policy.max_proposals
        )
        snapshot = encode_snapshot(inp)
        result = await asyncio.to_thread(policy.instance.run, snapshot)
        if self.policies.get(policy.name) is not policy:
            return  # replaced or removed while it ran: drop its output
        if not svc.active():
            return  # lost the scheduler role while it ran: only the holder makes operators
        policy.runs += 1
        policy.last_run_ms = getattr(result, "wall_ms", 0.0)
        policy.next_run = svc.now() + policy.interval_s
        if hasattr(result, "kind"):
            policy.failures += 1
            policy.last_error = f"{result.kind}: {result.message}"
            log.warning(
                "policy failed",
                extra={"policy": policy.name, "kind": result.kind, "error": result.message},
            )
            if policy.failure_strategy == "Disable":
                policy.phase = "Disabled"
            elif policy.failure_strategy == "Retry":
                policy.next_run = svc.now() + policy.interval_s * min(32, 2**policy.failures)
                policy.phase = "Failed"
            return
        policy.phase = "Running"
        for prop in result.proposals:
            verdict = policy_bridge.validate(
                svc.view,
                coord.controller,
                prop,
                svc.now(),
                svc._take_id,
                policy.name,
                coord.explicit_rules,
            )
            if verdict.operator is None:
                policy.rejected += 1
                policy.rejections.append(f"region {prop.region_id}: {verdict.reason}")
                continue
            if coord.controller.add(verdict.operator, svc.now()) is None:
                policy.accepted += 1
                svc._deliver(coord._first_send(verdict.operator, svc.now()))
            else:
                policy.rejected += 1
                policy.rejections.append(f"region {prop.region_id}: limits reached")
