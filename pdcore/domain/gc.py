"""GC safe points: the cluster's (moves only forward) and per-service ones with a TTL."""

from __future__ import annotations

from dataclasses import dataclass, field

GC_WORKER = b"gc_worker"
INFINITE_TTL = 1 << 62


@dataclass(slots=True)
class ServiceSafePoint:
    service_id: bytes
    safe_point: int
    expire_at_s: int  # unix seconds


@dataclass(slots=True)
class GcState:
    safe_point: int = 0
    services: dict[bytes, ServiceSafePoint] = field(default_factory=dict)

    def update_safe_point(self, new: int) -> int:
        """Advance; a smaller value is ignored. Returns the value in force."""
        if new > self.safe_point:
            self.safe_point = new
        return self.safe_point

    def _expire(self, now_s: int) -> None:
        for sid in [s for s, sp in self.services.items() if sp.expire_at_s <= now_s]:
            del self.services[sid]

    def min_service_safe_point(self, now_s: int) -> ServiceSafePoint | None:
        self._expire(now_s)
        if not self.services:
            return None
        return min(self.services.values(), key=lambda s: s.safe_point)

    def update_service(
        self, service_id: bytes, ttl_s: int, safe_point: int, now_s: int
    ) -> tuple[bool, ServiceSafePoint | None]:
        """Upsert a service safe point. TTL <= 0 removes it. A value below the current
        minimum is refused. Returns (changed, minimum now in force)."""
        self._expire(now_s)
        if ttl_s <= 0:
            changed = self.services.pop(service_id, None) is not None
            return changed, self.min_service_safe_point(now_s)
        current_min = self.min_service_safe_point(now_s)
        if current_min is not None and safe_point < current_min.safe_point:
            return False, current_min
        expire = INFINITE_TTL if service_id == GC_WORKER else now_s + ttl_s
        self.services[service_id] = ServiceSafePoint(service_id, safe_point, expire)
        return True, self.min_service_safe_point(now_s)
