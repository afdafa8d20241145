"""Watches of the etcd API: history replay, live events, progress, cancel.

A `WatchStream` is one client stream with any number of watchers; everything it
sends goes onto its `out` queue in order. Replay and registration happen in one step
of the event loop, so a watcher sees every revision after its start exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from pdcore.domain.mvcc import Event, EventType, Mvcc, in_range

INVALID_WATCH_ID = -1  # what etcd answers a progress request with (broadcast)
REPLAY_BATCH = 1000  # events per response when replaying history
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"
ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"


@dataclass(slots=True)
class WatchUpdate:
    """One WatchResponse, before it is put on the wire."""

    watch_id: int
    revision: int
    events: Sequence[Event] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""


@dataclass(frozen=True, slots=True)
class WatchSpec:
    key: bytes
    end: bytes | None = None  # as in mvcc: None one key, b"" unbounded
    start_revision: int = 0  # <= 0: the next revision
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    watch_id: int = 0  # 0: the server chooses (its ids count from 0)


@dataclass(slots=True)
class Watcher:
    id: int
    spec: WatchSpec
    stream: WatchStream
    next_rev: int = 0  # revisions below this were delivered

    def select(self, events: Sequence[Event]) -> list[Event]:
        s = self.spec
        out = []
        for ev in events:
            if not in_range(ev.kv.key, s.key, s.end):
                continue
            if (s.no_put and ev.type == EventType.PUT) or (
                s.no_delete and ev.type == EventType.DELETE
            ):
                continue
            out.append(ev if s.prev_kv or ev.prev_kv is None else Event(ev.type, ev.kv, None))
        return out


@dataclass(eq=False, slots=True)
class WatchStream:
    hub: WatchHub
    out: asyncio.Queue[WatchUpdate] = field(default_factory=asyncio.Queue)
    watchers: dict[int, Watcher] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # this member stopped serving
    _next_id: int = 0

    def create(self, spec: WatchSpec) -> None:
        explicit_id = spec.watch_id != 0
        mvcc = self.hub.mvcc
        current = mvcc.revision
        fail = ""
        if spec.end and spec.key >= spec.end:
            fail = ERR_EMPTY_RANGE
        elif explicit_id and spec.watch_id in self.watchers:
            fail = ERR_DUPLICATE_ID
        if fail:
            self.out.put_nowait(WatchUpdate(INVALID_WATCH_ID, current, (), True, True, 0, fail))
            return
        if explicit_id:
            wid = spec.watch_id
        else:
            while self._next_id in self.watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        self.out.put_nowait(WatchUpdate(wid, current, created=True))
        start = spec.start_revision if spec.start_revision > 0 else current + 1
        if start < mvcc.compact_revision:
            self.out.put_nowait(
                WatchUpdate(wid, current, canceled=True, compact_revision=mvcc.compact_revision)
            )
            return
        w = Watcher(wid, spec, self, next_rev=current + 1)
        if start <= current:
            self._replay(w, start)
        self.watchers[wid] = w
        self.hub.watchers += 1

    def _replay(self, w: Watcher, start: int) -> None:
        history = [ev for _, ev in self.hub.mvcc.events_since(start, w.spec.key, w.spec.end)]
        events = w.select(history)
        for i in range(0, len(events), REPLAY_BATCH):
            batch = events[i : i + REPLAY_BATCH]
            self.out.put_nowait(WatchUpdate(w.id, self.hub.mvcc.revision, batch))

    def cancel(self, watch_id: int) -> None:
        if self.watchers.pop(watch_id, None) is not None:
            self.hub.watchers -= 1
            self.out.put_nowait(WatchUpdate(watch_id, self.hub.mvcc.revision, canceled=True))

    def progress(self) -> None:
        self.out.put_nowait(WatchUpdate(INVALID_WATCH_ID, self.hub.mvcc.revision))

    def close(self) -> None:
        self.hub.watchers -= len(self.watchers)
        self.watchers.clear()
        self.hub.streams.discard(self)


class WatchHub:
    def __init__(self, mvcc: Mvcc) -> None:
        self.mvcc = mvcc
        self.streams: set[WatchStream] = set()
        self.watchers = 0

    def open(self) -> WatchStream:
        stream = WatchStream(self)
        self.streams.add(stream)
        return stream

    def publish(self, revision: int, events: Sequence[Event]) -> None:
        """Hand the events of one committed revision to every watcher they match."""
        if not events or not self.watchers:
            return
        for stream in self.streams:
            for w in stream.watchers.values():
                if revision < w.next_rev:
                    continue
                w.next_rev = revision + 1
                selected = w.select(events)
                if selected:
                    stream.out.put_nowait(WatchUpdate(w.id, revision, selected))

    def shutdown(self) -> None:
        """End every stream: this member no longer serves the etcd API."""
        for stream in list(self.streams):
            stream.ended.set()
            stream.close()

    def notify_progress(self) -> None:
        """etcd's periodic progress notification to watchers that asked for it."""
        rev = self.mvcc.revision
        for stream in self.streams:
            for w in stream.watchers.values():
                if w.spec.progress_notify:
                    stream.out.put_nowait(WatchUpdate(w.id, rev))
