"""What one run of a Wasm policy gives: its proposals, or a failure of a known kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pdcore.policy.abi import Proposal


class FailureKind(StrEnum):
    TRAP = "trap"  # the guest trapped (unreachable, division by zero, bad access...)
    FUEL = "fuel"  # ran out of its fuel budget
    MEMORY = "memory"  # hit its memory limit, or could not take the snapshot
    DEADLINE = "deadline"  # ran past its wall-clock timeout
    MALFORMED_OUTPUT = "malformed_output"  # its proposals buffer does not decode


@dataclass(frozen=True, slots=True)
class PolicyResult:
    proposals: list[Proposal]
    fuel_used: int
    wall_ms: float
    logs: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PolicyFailure:
    kind: FailureKind
    message: str
    wall_ms: float = 0.0


RunOutcome = PolicyResult | PolicyFailure
