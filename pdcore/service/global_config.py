"""GlobalConfig: PD's global config items (LoadGlobalConfig, StoreGlobalConfig,
WatchGlobalConfig): saved through `MetaStore` first, then a new revision is announced
to every watcher."""

from __future__ import annotations

import asyncio

from pdcore.service.member_state import MemberState


class GlobalConfig:
    def __init__(self, member: MemberState) -> None:
        self.member = member
        self.items: dict[str, bytes] = {}
        self.revision = 0
        self.watchers: set[asyncio.Queue[int]] = set()

    def load(self, items: dict[str, bytes]) -> None:
        self.items = dict(items)

    async def store(self, items: dict[str, bytes | None]) -> None:
        """Set (or, for None, delete) items; watchers hear of the new revision."""
        self.member.check_serving()
        await self.member.meta.save_global_config(items)
        for k, v in items.items():
            if v is None:
                self.items.pop(k, None)
            else:
                self.items[k] = v
        self.revision += 1
        for q in self.watchers:
            q.put_nowait(self.revision)
