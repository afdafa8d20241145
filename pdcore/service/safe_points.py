"""SafePoints: the GC safe point and the services' safe points (with TTLs), saved through
`MetaStore` when they move. The cluster safe point never goes back, and a service may not
set one below it."""

from __future__ import annotations

from pdcore.domain.errors import PdError
from pdcore.domain.gc import GcState, ServiceSafePoint
from pdcore.service.member_state import MemberState


class SafePoints:
    def __init__(self, member: MemberState) -> None:
        self.member = member
        self.gc = GcState()

    async def update_gc_safe_point(self, safe_point: int) -> int:
        self.member.check_serving()
        self.member.require_bootstrapped()
        old = self.gc.safe_point
        new = self.gc.update_safe_point(safe_point)
        if new != old:
            await self.member.meta.save_gc(self.gc)
        return new

    async def update_service_safe_point(
        self, service_id: bytes, ttl_s: int, safe_point: int
    ) -> ServiceSafePoint | None:
        self.member.check_serving()
        self.member.require_bootstrapped()
        if not service_id:
            raise PdError("invalid request: service id is empty")
        now = int(self.member.clock.now_s())
        if ttl_s > 0 and safe_point < self.gc.safe_point:
            # Below the cluster safe point: refuse and report the minimum in force.
            return self.gc.min_service_safe_point(now)
        changed, minimum = self.gc.update_service(service_id, ttl_s, safe_point, now)
        if changed:
            await self.member.meta.save_gc(self.gc)
        return minimum
