"""KeyspaceManager: PD's keyspaces on top of the MetaStore port.

The pd-leader creates and changes keyspaces; every write reaches the store before it is
answered. Ids come from their own mark (`cas_keyspace_mark`), moved before the keyspace
is written, so an id is never handed out twice, even across a crash or a failover. The
DEFAULT keyspace (id 0) is written when a leader first finds none. Watchers get every
changed keyspace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from pdcore.domain.errors import CasConflict, InvalidValue, NotLeader, PdError
from pdcore.domain.keyspace import (
    DEFAULT_ID,
    MAX_ID,
    Keyspace,
    KeyspaceExists,
    KeyspaceNotFound,
    KeyspaceState,
    check_name,
    default_keyspace,
)
from pdcore.ports import Clock, MetaStore

log = logging.getLogger("kubepd.keyspaces")


class KeyspaceManager:
    def __init__(self, meta: MetaStore, clock: Clock, is_leader: Callable[[], bool]) -> None:
        self.meta = meta
        self.clock = clock
        self._is_leader = is_leader
        self._by_id: dict[int, Keyspace] = {}
        self._by_name: dict[str, int] = {}
        self._mark = 0
        self._lock = asyncio.Lock()
        self._watchers: set[asyncio.Queue[list[Keyspace]]] = set()

    def _now(self) -> int:
        return int(self.clock.now_s())

    async def load(self) -> None:
        """(Re)read every keyspace; watchers hear of the ones that changed."""
        self._mark, keyspaces = await self.meta.load_keyspaces()
        self.apply(keyspaces)

    def apply(self, keyspaces: list[Keyspace]) -> None:
        """Take a complete set of keyspaces as read from the store (a follower's view,
        kept current by a watch); the id mark is read again when leading starts."""
        changed = [k for k in keyspaces if self._by_id.get(k.id) != k]
        self._by_id = {k.id: k for k in keyspaces}
        self._by_name = {k.name: k.id for k in keyspaces}
        self._notify(changed)

    async def start_leading(self) -> None:
        """What a new leader does first: load, and write DEFAULT if it is missing."""
        await self.load()
        if DEFAULT_ID not in self._by_id:
            async with self._lock:
                await self._put(default_keyspace(self._now()))
            log.info("DEFAULT keyspace created")

    def _check_leader(self) -> None:
        if not self._is_leader():
            raise NotLeader()

    # -- reads --------------------------------------------------------------------------
    def by_name(self, name: str) -> Keyspace:
        kid = self._by_name.get(name)
        if kid is None:
            raise KeyspaceNotFound(repr(name))
        return self._by_id[kid]

    def by_id(self, kid: int) -> Keyspace:
        k = self._by_id.get(kid)
        if k is None:
            raise KeyspaceNotFound(f"id {kid}")
        return k

    def range(self, start_id: int = 0, limit: int = 0) -> list[Keyspace]:
        """Keyspaces with id >= start_id in id order; limit 0 means all."""
        out = sorted((k for k in self._by_id.values() if k.id >= start_id), key=lambda k: k.id)
        return out[:limit] if limit > 0 else out

    # -- writes (pd-leader) ----------------------------------------------------------
    async def create(self, name: str, config: dict[str, str]) -> Keyspace:
        self._check_leader()
        check_name(name)
        async with self._lock:
            if name in self._by_name:
                raise KeyspaceExists(name)
            kid = await self._next_id()
            now = self._now()
            keyspace = Keyspace(kid, name, created_at=now, state_changed_at=now, config=config)
            await self._put(keyspace)
        log.info("keyspace created", extra={"keyspace": name, "id": kid})
        return keyspace

    async def _next_id(self) -> int:
        """Move the mark by one, by compare-and-swap: a conflict means our mark was
        stale (a new leader that has not reloaded yet): read it again and retry."""
        for _ in range(3):
            if self._mark >= MAX_ID:
                raise PdError(f"no keyspace id left (the largest is {MAX_ID})")
            try:
                await self.meta.cas_keyspace_mark(self._mark, self._mark + 1)
            except CasConflict:
                self._mark, _ = await self.meta.load_keyspaces()
                continue
            self._mark += 1
            return self._mark
        raise PdError("keyspace ids keep moving underneath; retry")

    async def update_state(self, kid: int, state: KeyspaceState) -> Keyspace:
        self._check_leader()
        async with self._lock:
            old = self.by_id(kid)
            new = old.with_state(state, self._now())
            if new != old:
                await self._put(new)
        return new

    async def update_config(self, name: str, patch: dict[str, str | None]) -> Keyspace:
        self._check_leader()
        async with self._lock:
            old = self.by_name(name)
            if old.state == KeyspaceState.TOMBSTONE:
                raise InvalidValue(f"keyspace {name!r} is TOMBSTONE: its config is frozen")
            new = old.with_config(patch)
            if new != old:
                await self._put(new)
        return new

    async def _put(self, keyspace: Keyspace) -> None:
        await self.meta.save_keyspace(keyspace)
        self._by_id[keyspace.id] = keyspace
        self._by_name[keyspace.name] = keyspace.id
        self._notify([keyspace])

    # -- watching ----------------------------------------------------------------------
    def _notify(self, changed: list[Keyspace]) -> None:
        if changed:
            for q in self._watchers:
                q.put_nowait(changed)

    async def watch(self) -> AsyncIterator[list[Keyspace]]:
        """Every keyspace first, then each batch of changed keyspaces."""
        q: asyncio.Queue[list[Keyspace]] = asyncio.Queue()
        self._watchers.add(q)
        try:
            yield self.range()
            while True:
                yield await q.get()
        finally:
            self._watchers.discard(q)
