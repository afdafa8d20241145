"""The virtual-time loop and the in-process gRPC transport the simulator runs on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from pdcore.adapters import inproc, virtual_loop
from pdcore.adapters.clock import VIRTUAL_EPOCH_S, VirtualClock
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc


def test_sleeping_an_hour_takes_no_wall_time_and_timers_keep_their_order() -> None:
    async def main() -> tuple[float, list[str], float]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        loop.call_later(30.0, fired.append, "b")
        loop.call_later(10.0, fired.append, "a")
        wall0 = time.monotonic()
        await asyncio.sleep(3600.0)
        return loop.time(), fired, time.monotonic() - wall0

    now, fired, wall = virtual_loop.run(main)
    assert now == pytest.approx(3600.0) and fired == ["a", "b"]
    assert wall < 5.0  # an hour of simulated time; the bound only guards against real sleeps


def test_deadlines_count_simulated_seconds() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 42.0)
        return loop.time()

    assert virtual_loop.run(main) == pytest.approx(42.0)


def test_time_stands_still_while_work_outside_the_loop_is_held() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        sleeper = asyncio.ensure_future(asyncio.sleep(1000.0))
        await loop.run_in_executor(None, time.sleep, 0.3)  # real work in a thread
        during = loop.time()
        await sleeper
        return during, loop.time()

    during, after = virtual_loop.run(main)
    assert during < 1.0 and after == pytest.approx(1000.0)


def test_virtual_clock_reads_the_loop() -> None:
    async def main() -> tuple[float, float]:
        clock = VirtualClock.of_running_loop()
        await clock.sleep(5.0)
        return clock.monotonic_s(), clock.now_s()

    mono, now = virtual_loop.run(main)
    assert mono == pytest.approx(5.0) and now == pytest.approx(VIRTUAL_EPOCH_S + 5.0)
    with pytest.raises(RuntimeError, match="VirtualEventLoop"):
        asyncio.run(_clock_outside())


async def _clock_outside() -> None:
    VirtualClock.of_running_loop()


class _Pd(pdpb_pb2_grpc.PDServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.received: list[Any] = []
        self.slow = asyncio.Event()

    async def GetMembers(self, request: Any, context: Any) -> Any:
        self.received.append(request)
        resp = pdpb_pb2.GetMembersResponse()
        resp.header.cluster_id = request.header.cluster_id + 1
        return resp

    async def AllocID(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no ids today")

    async def Tso(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for req in requests:
            await self.slow.wait()  # a reader that does not keep up
            resp = pdpb_pb2.TsoResponse(count=req.count)
            yield resp


def _channel(servicer: Any) -> tuple[inproc.InProcessServer, pdpb_pb2_grpc.PDStub]:
    server = inproc.InProcessServer()
    pdpb_pb2_grpc.add_PDServicer_to_server(servicer, server)
    return server, pdpb_pb2_grpc.PDStub(inproc.InProcessChannel(lambda: server))


def test_unary_calls_are_encoded_and_errors_keep_their_code() -> None:
    async def main() -> None:
        pd = _Pd()
        server, stub = _channel(pd)
        req = pdpb_pb2.GetMembersRequest(header=pdpb_pb2.RequestHeader(cluster_id=41))
        resp = await stub.GetMembers(req)
        assert resp.header.cluster_id == 42
        assert pd.received[0] is not req and pd.received[0] == req  # decoded, not shared
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.AllocID(pdpb_pb2.AllocIDRequest())
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.details() == "no ids today"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetStore(pdpb_pb2.GetStoreRequest())
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetMembers(req)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    virtual_loop.run(main)


def test_client_streaming_calls_report_errors_as_unary_ones_do() -> None:
    """Both single-response shapes share one translation: a code set without raising,
    an abort, and an unexpected exception all reach the caller as grpc reports them."""

    async def total(requests: AsyncIterator[Any], context: Any) -> Any:
        n = sum([r.count async for r in requests])
        if n == 0:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("nothing to count")
        if n == 1:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "one is too few")
        if n == 2:
            raise RuntimeError("boom")
        return pdpb_pb2.AllocIDResponse(id=n)

    async def main() -> None:
        server = inproc.InProcessServer()
        method = grpc.stream_unary_rpc_method_handler(
            total,
            request_deserializer=pdpb_pb2.AllocIDRequest.FromString,
            response_serializer=pdpb_pb2.AllocIDResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("t.T", {"Sum": method})]
        )
        call = inproc.InProcessChannel(lambda: server).stream_unary(
            "/t.T/Sum",
            request_serializer=pdpb_pb2.AllocIDRequest.SerializeToString,
            response_deserializer=pdpb_pb2.AllocIDResponse.FromString,
        )

        def reqs(*counts: int) -> list[Any]:
            return [pdpb_pb2.AllocIDRequest(count=c) for c in counts]

        assert (await call(reqs(3, 4))).id == 7
        expected = {
            (0,): (grpc.StatusCode.INVALID_ARGUMENT, "nothing to count"),
            (1,): (grpc.StatusCode.OUT_OF_RANGE, "one is too few"),
            (2,): (grpc.StatusCode.UNKNOWN, "Unexpected RuntimeError: boom"),
        }
        for counts, (code, details) in expected.items():
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call(reqs(*counts))
            assert (e.value.code(), e.value.details()) == (code, details)

    virtual_loop.run(main)


def test_streams_are_bounded_and_end_when_the_server_stops() -> None:
    async def main() -> None:
        pd = _Pd()
        server, stub = _channel(pd)
        sent = 0

        async def requests() -> AsyncIterator[Any]:
            nonlocal sent
            for i in range(10 * inproc.STREAM_WINDOW):
                sent += 1
                yield pdpb_pb2.TsoRequest(count=i + 1)

        call = stub.Tso(requests())
        await asyncio.sleep(10.0)
        # The server reads nothing yet: the sender is held back by the window.
        assert sent <= inproc.STREAM_WINDOW + 2
        pd.slow.set()
        first = await call.read()
        assert first.count == 1
        server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    virtual_loop.run(main)


class _Flooding(pdpb_pb2_grpc.PDServicer):  # type: ignore[misc]
    """A stream handler that answers faster than its client reads, with clean-up."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def Tso(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        try:
            for i in range(10 * inproc.STREAM_WINDOW):
                yield pdpb_pb2.TsoResponse(count=i + 1)
        finally:
            self.closed.set()


def test_a_cancelled_stream_closes_its_handler_parked_at_a_yield() -> None:
    # The handler waits on the full window between two responses; cancelling the call
    # must run its clean-up now (PD's heartbeat handler stops its reader task there),
    # not leave it to the loop's shutdown ("Task was destroyed but it is pending").
    async def main() -> bool:
        pd = _Flooding()
        _server, stub = _channel(pd)

        async def requests() -> AsyncIterator[Any]:
            yield pdpb_pb2.TsoRequest(count=1)
            await asyncio.Event().wait()

        call = stub.Tso(requests())
        assert (await call.read()).count == 1
        await asyncio.sleep(1.0)  # the window fills; the handler is parked
        assert not pd.closed.is_set()
        call.cancel()
        try:
            await asyncio.wait_for(pd.closed.wait(), 5.0)
        except TimeoutError:
            return False
        return True

    assert virtual_loop.run(main), "the handler's clean-up did not run on cancel"
