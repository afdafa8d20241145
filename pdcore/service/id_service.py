"""IdService: unique ids (stores, regions, peers) from a high-water mark in `MetaStore`,
reserved in steps by compare-and-swap, so a new pd-leader continues above every id its
predecessors could have handed out."""

from __future__ import annotations

import asyncio

from pdcore.domain.errors import CasConflict, InvalidValue, NotLeader
from pdcore.domain.ids import MAX_ALLOC_COUNT, IdAllocator
from pdcore.service.member_state import MemberState


class IdService:
    def __init__(self, member: MemberState, step: int = 1000) -> None:
        self.member = member
        self.ids = IdAllocator(step=step)
        self.lock = asyncio.Lock()  # mark moves, one at a time (and take-overs)

    def load(self, mark: int) -> None:
        """Continue above the durable `mark`."""
        self.ids = IdAllocator(step=self.ids.step)
        self.ids.start(mark)

    async def alloc_id(self, count: int = 1) -> int:
        """Allocate `count` ids; return the largest (the ids are id-count+1 .. id)."""
        if count > MAX_ALLOC_COUNT:
            raise InvalidValue(
                f"invalid request: alloc id count {count} exceeds the limit {MAX_ALLOC_COUNT}"
            )
        return await self.alloc_ids(count)

    async def alloc_ids(self, count: int) -> int:
        """`alloc_id` without the per-request limit (a batch split asks for more)."""
        self.member.check_serving()
        count = max(1, count)
        async with self.lock:
            need = self.ids.reservation_needed(count)
            if need is not None:
                await self._cas_mark(need)
                self.ids.set_end(need)
            self.member.stats.ids_allocated += count
            return self.ids.alloc(count)

    async def raise_id_mark(self, mark: int) -> int:
        """Make every id handed out from now on larger than `mark`; never lowers the
        mark (PD's `alloc_id` key written by tools). Returns the mark in force."""
        self.member.check_serving()
        async with self.lock:
            if mark > self.ids.end:
                await self._cas_mark(mark)
            self.ids.skip_to(mark)
            return self.ids.end

    async def _cas_mark(self, mark: int) -> None:
        try:
            await self.member.meta.cas_id_mark(self.ids.end, mark)
        except CasConflict:
            raise NotLeader("id mark was taken over by another member") from None
