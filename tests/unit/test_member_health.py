"""MemberHealth follows the member's "can serve" predicate and never serves again once
shutdown began."""

from __future__ import annotations

import asyncio
import time

from pdcore.adapters.grpc.health import NOT_SERVING, SERVING, MemberHealth


def status(h: MemberHealth, service: str = "") -> int:
    return int(h.servicer._server_status[service])


async def until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_not_serving_until_the_predicate_holds_then_follows_it() -> None:
    h = MemberHealth(poll_s=0.01)
    h.track("pdpb.PD")
    can = False
    await h.start(lambda: can)
    assert status(h) == status(h, "pdpb.PD") == NOT_SERVING  # start-up
    can = True
    await until(lambda: status(h) == SERVING and status(h, "pdpb.PD") == SERVING)
    can = False  # e.g. a sidecar that lost its pd-leader
    await until(lambda: status(h, "pdpb.PD") == NOT_SERVING)
    can = True
    await h.refresh()
    assert status(h) == SERVING
    await h.shutdown()
    assert status(h) == status(h, "pdpb.PD") == NOT_SERVING
    await h.refresh()
    await asyncio.sleep(0.05)
    assert status(h) == NOT_SERVING  # shutdown is for good
