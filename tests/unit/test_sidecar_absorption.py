"""A follower sidecar's region heartbeats: changes go on to the pd-leader at once;
an unchanged heartbeat is absorbed unless it carries write flow or its region was not
forwarded for STATS_FORWARD_S (30 s). So read flow and size changes reach the leader
late, but never later than 30 s."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pdcore.adapters.sidecar import service as sidecar_service
from pdcore.adapters.sidecar.leader_link import LeaderLink
from pdcore.adapters.sidecar.service import STATS_FORWARD_S, SidecarService
from pdcore.domain.region_tree import RegionTree
from pdcore.proto import pdpb_pb2
from pdcore.service.member_state import NodeStats
from pdcore.service.node import PdNode
from pdcore.service.streams import HeartbeatStreams

CLUSTER = 7


class Upstream:
    """The pd-leader's end of the forwarded stream: records what reaches it."""

    def __init__(self) -> None:
        self.received: list[pdpb_pb2.RegionHeartbeatRequest] = []
        self.metadata: Any = None

    def RegionHeartbeat(self, requests: AsyncIterator[Any], metadata: Any = None) -> Any:
        self.metadata = metadata
        upstream = self

        class Call:
            def __init__(self) -> None:
                self.task = asyncio.get_running_loop().create_task(self.consume())
                self.done = asyncio.Event()

            async def consume(self) -> None:
                async for r in requests:
                    upstream.received.append(r)

            def __aiter__(self) -> Call:
                return self

            async def __anext__(self) -> Any:
                await asyncio.Event().wait()  # the leader sends no commands here

            def cancel(self) -> None:
                self.task.cancel()

        return Call()


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def heartbeat(
    *,
    version: int = 1,
    leader_store: int = 1,
    size: int = 96,
    bytes_read: int = 0,
    bytes_written: int = 0,
) -> pdpb_pb2.RegionHeartbeatRequest:
    req = pdpb_pb2.RegionHeartbeatRequest()
    req.header.cluster_id = CLUSTER
    r = req.region
    r.id, r.start_key, r.end_key = 10, b"a", b"b"
    r.region_epoch.conf_ver, r.region_epoch.version = 1, version
    for sid in (1, 2, 3):
        p = r.peers.add()
        p.id, p.store_id = 100 + sid, sid
    req.leader.id, req.leader.store_id = 100 + leader_store, leader_store
    req.approximate_size = size
    req.bytes_read, req.bytes_written = bytes_read, bytes_written
    req.interval.start_timestamp, req.interval.end_timestamp = 0, 10
    return req


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The sidecar module's clock only (the event loop keeps the real one)."""
    fake = SimpleNamespace(t=1000.0)
    fake.monotonic = lambda: fake.t
    monkeypatch.setattr(sidecar_service, "time", fake)
    return fake


async def test_only_changes_write_flow_and_30s_old_figures_go_on(clock: SimpleNamespace) -> None:
    upstream = Upstream()
    link = SimpleNamespace(current=lambda: upstream)
    node = SimpleNamespace(started=True, cluster_id=CLUSTER, tree=RegionTree(), stats=NodeStats())
    svc = SidecarService(
        cast(PdNode, node), cast(LeaderLink, link), lambda: False, HeartbeatStreams(), "pod-0"
    )
    requests: asyncio.Queue[Any] = asyncio.Queue()

    async def from_tikv() -> AsyncIterator[Any]:
        while True:
            yield await requests.get()

    stream = svc.RegionHeartbeat(from_tikv(), cast(Any, Context()))
    pump = asyncio.get_running_loop().create_task(anext(stream))  # type: ignore[arg-type]
    seen = 0

    async def send(req: pdpb_pb2.RegionHeartbeatRequest, advance: float = 0.0) -> bool:
        """Whether this heartbeat went on to the leader (else the sidecar absorbed it)."""
        nonlocal seen
        clock.t += advance
        before = svc.forwarded_heartbeats
        await requests.put(req)
        seen += 1
        deadline = time.monotonic() + 5
        while svc.absorbed + svc.forwarded_heartbeats < seen:
            assert time.monotonic() < deadline, "the sidecar did not read the heartbeat"
            await asyncio.sleep(0.001)
        forwarded = svc.forwarded_heartbeats > before
        if forwarded:
            while len(upstream.received) < svc.forwarded_heartbeats:
                assert time.monotonic() < deadline, "the forwarded heartbeat never arrived"
                await asyncio.sleep(0.001)
            assert upstream.received[-1] == req  # forwarded unchanged
        return forwarded

    try:
        assert await send(heartbeat())  # new to this sidecar
        assert not await send(heartbeat(), 1)  # nothing changed
        assert not await send(heartbeat(bytes_read=1 << 20), 1)  # read flow: hidden...
        assert not await send(heartbeat(size=500), 1)  # ...and so is a new size
        assert await send(heartbeat(bytes_written=1 << 20), 1)  # write flow goes on
        assert not await send(heartbeat(size=500), STATS_FORWARD_S - 1)
        assert await send(heartbeat(size=500), 1.5)  # 30 s since the last one went on
        assert upstream.received[-1].approximate_size == 500
        assert await send(heartbeat(leader_store=2), 0.1)  # a new leader: at once
        assert await send(heartbeat(leader_store=2, version=2), 0.1)  # a split: at once
        assert not await send(heartbeat(leader_store=2, version=2, bytes_read=5), 0.1)
        assert (svc.forwarded_heartbeats, svc.absorbed) == (5, 5)
        assert upstream.metadata == (("kubepd-via", "pod-0"),)
    finally:
        pump.cancel()  # ends the stream: its finally cancels the sidecar's tasks
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pump
        await stream.aclose()  # type: ignore[attr-defined]
