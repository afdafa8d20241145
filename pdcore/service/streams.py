"""HeartbeatStreams: which store's region-heartbeat stream is open, for pushing commands.

PD binds a stream to the store of the leader that sent on it; a command for a region
goes to the stream of the store holding that region's leader. This is the embedded
`StepSink`; on Kubernetes the same port forwards to the store's sidecar instead.
"""

from __future__ import annotations

from collections.abc import Callable

from pdcore.domain.commands import RegionCommand

Deliver = Callable[[RegionCommand], None]


class HeartbeatStreams:
    def __init__(self, on_bind: Callable[[int], None] | None = None) -> None:
        self._streams: dict[int, Deliver] = {}
        self.on_bind = on_bind  # told each store whose stream opens here
        self.sent = 0
        self.undeliverable = 0

    def bind(self, store_id: int, deliver: Deliver) -> None:
        self._streams[store_id] = deliver
        if self.on_bind is not None:
            self.on_bind(store_id)

    def unbind(self, store_id: int, deliver: Deliver) -> None:
        if self._streams.get(store_id) is deliver:
            del self._streams[store_id]

    def has(self, store_id: int) -> bool:
        return store_id in self._streams

    def connected(self) -> list[int]:
        return sorted(self._streams)

    def send(self, store_id: int, command: RegionCommand) -> bool:
        deliver = self._streams.get(store_id)
        if deliver is None:
            self.undeliverable += 1
            return False
        deliver(command)
        self.sent += 1
        return True
