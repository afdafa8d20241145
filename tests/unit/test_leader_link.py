"""The sidecar's TSO relay: whatever ends the stream to the pd-leader, every waiting
request gets NotLeader (UNAVAILABLE, which PD clients retry) at once, and the next
request opens a fresh stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from pdcore.adapters.sidecar.leader_link import LeaderLink
from pdcore.domain.errors import NotLeader
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc


class OneShotLeader(pdpb_pb2_grpc.PDServicer):  # type: ignore[misc]
    """Answers the first request of each Tso stream, then ends the stream (as a dying
    pd-leader does): the relay's next write is on a finished call."""

    def __init__(self) -> None:
        self.streams = 0

    async def Tso(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        self.streams += 1
        async for req in request_iterator:
            resp = pdpb_pb2.TsoResponse(count=req.count)
            resp.timestamp.physical, resp.timestamp.logical = 1000 * self.streams, req.count
            yield resp
            return


@pytest.fixture
async def leader() -> AsyncIterator[tuple[str, OneShotLeader]]:
    server = grpc.aio.server()
    servicer = OneShotLeader()
    pdpb_pb2_grpc.add_PDServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"leader@http://127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


async def test_a_finished_leader_stream_fails_the_batch_and_the_next_one_reconnects(
    leader: tuple[str, OneShotLeader],
) -> None:
    holder, servicer = leader
    link = LeaderLink(lambda: holder, lambda: 1, own_url="http://127.0.0.1:1")
    try:
        first = await asyncio.wait_for(link.tso(3), 5)
        assert (first.physical, first.logical) == (1000, 3)
        # The stream ended after one answer: the next write finds the call finished.
        with pytest.raises(NotLeader):
            await asyncio.wait_for(link.tso(1), 5)  # before the fix: hung forever
        again = await asyncio.wait_for(link.tso(2), 5)
        assert again.physical == 2000 and servicer.streams == 2
    finally:
        await link.close()


class BrokenCall:
    """A call whose write fails the way grpc.aio fails on a finished RPC."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def write(self, req: Any) -> None:
        raise self.exc

    async def read(self) -> Any:  # pragma: no cover - never reached
        raise AssertionError

    def cancel(self) -> None:
        pass


@pytest.mark.parametrize(
    "exc",
    [asyncio.InvalidStateError("RPC already finished."), RuntimeError("anything at all")],
)
async def test_every_failure_reaches_all_waiters(exc: BaseException) -> None:
    link = LeaderLink(lambda: "leader@http://127.0.0.1:1", lambda: 1)

    class Stub:
        def Tso(self) -> BrokenCall:
            return BrokenCall(exc)

    link.current = lambda: Stub()  # type: ignore[assignment,method-assign,return-value]
    waiters = [asyncio.ensure_future(link.tso(1)) for _ in range(5)]
    done, pending = await asyncio.wait(waiters, timeout=5)
    assert not pending
    assert all(isinstance(w.exception(), NotLeader) for w in done)
    await link.close()


async def test_closing_the_link_releases_waiters() -> None:
    link = LeaderLink(lambda: "leader@http://127.0.0.1:1", lambda: 1)
    hang = asyncio.Event()

    class SlowCall(BrokenCall):
        async def write(self, req: Any) -> None:
            await hang.wait()

    class Stub:
        def Tso(self) -> SlowCall:
            return SlowCall(RuntimeError())

    link.current = lambda: Stub()  # type: ignore[assignment,method-assign,return-value]
    waiter = asyncio.ensure_future(link.tso(1))
    await asyncio.sleep(0)
    await link.close()
    with pytest.raises(NotLeader):
        await asyncio.wait_for(waiter, 5)
