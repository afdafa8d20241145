"""Why a scheduler did or did not schedule: the candidates of its last run and the
reason each was filtered out or passed over."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Plan:
    stage: str  # "source", "region", "target", "limit", ...
    subject: str  # "store 3", "region 17", ...
    reason: str  # empty when chosen


@dataclass
class Diagnosis:
    scheduler: str
    at: float = 0.0
    scheduled: int = 0
    summary: str = ""
    plans: list[Plan] = field(default_factory=list)
    max_plans: int = 200

    def note(self, stage: str, subject: str, reason: str) -> None:
        if len(self.plans) < self.max_plans:
            self.plans.append(Plan(stage, subject, reason))

    def as_json(self) -> dict[str, object]:
        return {
            "scheduler": self.scheduler,
            "at": self.at,
            "scheduled": self.scheduled,
            "summary": self.summary or ("scheduled" if self.scheduled else "nothing scheduled"),
            "plans": [
                {"stage": p.stage, "subject": p.subject, "reason": p.reason or "chosen"}
                for p in self.plans
            ],
        }
