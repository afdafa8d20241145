"""How a region heartbeat stream's read loop ends: the client going away is quiet, a
stale region is PD's error in the response, anything else is logged at ERROR with its
traceback and counted in kubepd_heartbeat_stream_errors_total."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import generate_latest

from pdcore.adapters.grpc.pd_service import PdService
from pdcore.adapters.http.metrics import Metrics
from pdcore.adapters.sidecar.leader_link import LeaderLink
from pdcore.adapters.sidecar.service import SidecarService
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.errors import StaleRegion
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.proto import metapb_pb2, pdpb_pb2
from pdcore.service.streams import HeartbeatStreams
from tests.unit.test_node import bootstrapped
from tests.unit.test_sidecar_absorption import Upstream


class Context:
    def __init__(self, gone: bool = False) -> None:
        self.gone = gone

    def done(self) -> bool:
        return self.gone

    def cancelled(self) -> bool:
        return self.gone

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: Any, details: str = "") -> None:
        raise AssertionError(f"aborted: {code} {details}")


def heartbeat(cluster_id: int, version: int) -> Any:
    req = pdpb_pb2.RegionHeartbeatRequest()
    req.header.cluster_id = cluster_id
    req.region.CopyFrom(
        metapb_pb2.Region(
            id=2,
            region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=version),
            peers=[metapb_pb2.Peer(id=3, store_id=1)],
        )
    )
    req.leader.CopyFrom(metapb_pb2.Peer(id=3, store_id=1))
    return req


async def requests_then(reqs: list[Any], exc: Exception) -> AsyncIterator[Any]:
    for r in reqs:
        yield r
    raise exc


def errors_metric(node: Any) -> str:
    text = generate_latest(Metrics(node).registry).decode()
    return "\n".join(
        line for line in text.splitlines() if line.startswith("kubepd_heartbeat_stream_errors")
    )


async def run(svc: PdService, reqs: AsyncIterator[Any], ctx: Context) -> list[Any]:
    return [resp async for resp in svc.RegionHeartbeat(reqs, ctx)]  # type: ignore[arg-type]


async def test_a_bug_in_the_read_loop_is_an_error_with_traceback_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await bootstrapped(MemoryStore())
    svc = PdService(node)
    caplog.set_level(logging.DEBUG, logger="kubepd.heartbeat")
    reqs = requests_then([heartbeat(node.cluster_id, 2)], RuntimeError("decoder bug"))
    await run(svc, reqs, Context())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "decoder bug" in caplog.text
    assert 'kubepd_heartbeat_stream_errors_total{stream="pd"} 1.0' in errors_metric(node)
    await node.stop()


async def test_the_client_going_away_is_quiet_and_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await bootstrapped(MemoryStore())
    svc = PdService(node)
    caplog.set_level(logging.DEBUG, logger="kubepd.heartbeat")
    reqs = requests_then([heartbeat(node.cluster_id, 2)], RuntimeError("call ended"))
    await run(svc, reqs, Context(gone=True))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "stream=" not in errors_metric(node)
    await node.stop()


async def test_a_stale_region_is_pds_error_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await bootstrapped(MemoryStore())
    svc = PdService(node)
    node.region_heartbeat(Region(2, b"", b"", RegionEpoch(1, 5), (Peer(3, 1),), leader=Peer(3, 1)))
    caplog.set_level(logging.DEBUG, logger="kubepd.heartbeat")

    async def stale_then_fresh() -> AsyncIterator[Any]:
        yield heartbeat(node.cluster_id, 3)  # older than version 5
        yield heartbeat(node.cluster_id, 6)

    out = await run(svc, stale_then_fresh(), Context())
    errs = [r.header.error for r in out if r.header.HasField("error")]
    assert [e.type for e in errs] == [int(StaleRegion("").kind)], errs
    region = node.tree.get(2)
    assert region is not None and region.epoch.version == 6, "the stream went on"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await node.stop()


def follower(node: Any) -> SidecarService:
    """A follower sidecar over `node`, forwarding to an upstream that only listens."""
    link = SimpleNamespace(current=lambda: Upstream())
    return SidecarService(node, cast(LeaderLink, link), lambda: False, HeartbeatStreams(), "p")


@pytest.mark.parametrize("gone", [False, True])
async def test_a_follower_sidecars_read_loop_ends_the_same_way(
    caplog: pytest.LogCaptureFixture, gone: bool
) -> None:
    node = await bootstrapped(MemoryStore())
    svc = follower(node)
    caplog.set_level(logging.DEBUG, logger="kubepd.heartbeat")
    reqs = requests_then([heartbeat(node.cluster_id, 2)], RuntimeError("cache bug"))
    await run(svc, reqs, Context(gone=gone))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    if gone:
        assert not errors and "stream=" not in errors_metric(node)
    else:
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert 'kubepd_heartbeat_stream_errors_total{stream="sidecar"} 1.0' in errors_metric(node)
    region = node.tree.get(2)
    assert region is not None and region.epoch.version == 2, "the heartbeat before it counted"
    await node.stop()
