"""How a heartbeat stream's read loop ends, told apart (PD's servers and the sidecar's):

* the client went away — the call was cancelled or has ended: quiet (DEBUG);
* a rejected report (a stale region, an unknown store) is PD's error in the response
  header, sent by the loop itself, and never reaches here;
* anything else is a bug or a broken dependency: logged at ERROR with its traceback and
  counted (`kubepd_heartbeat_stream_errors_total{stream=...}`), so it does not show up
  only as TiKV reconnecting its stream.
"""

from __future__ import annotations

import logging

import grpc

from pdcore.adapters.grpc.errors import Ctx
from pdcore.service.member_state import NodeStats

log = logging.getLogger("kubepd.heartbeat")


def client_went_away(exc: BaseException, context: Ctx) -> bool:
    if context.done() or context.cancelled():
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.CANCELLED


def read_loop_failed(exc: Exception, context: Ctx, stats: NodeStats, stream: str) -> None:
    """Classify and report an exception that ended a heartbeat stream's read loop."""
    if client_went_away(exc, context):
        log.debug("%s heartbeat stream: the client went away", stream, exc_info=exc)
        return
    stream_failed(exc, stats, stream)


def stream_failed(exc: Exception, stats: NodeStats, stream: str) -> None:
    """Count and log at ERROR, with the traceback, a heartbeat stream's failure."""
    stats.stream_errors[stream] = stats.stream_errors.get(stream, 0) + 1
    log.error("%s heartbeat stream failed", stream, exc_info=exc)
