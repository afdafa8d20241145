"""Operator steps from the scheduler role's holder to the TiKV that must carry them out.

* `StepRouter` is the holder's `StepSink`: a step for the store served by this very
  process goes straight onto its TiKV's heartbeat stream; any other goes to the sidecar
  that serves that store (from the directory), batched per sidecar, signed with the
  holder's scheduler term.
* `StepReceiver` is the sidecar's side (`kubepdpb.Sidecar`): it admits a batch only if
  the fence says the sender holds the scheduler role now, and only for the store whose
  TiKV is connected to it, then puts the steps on that TiKV's heartbeat stream.

Re-sending is the scheduler's business: its controller sends a step again when later
heartbeats (which reach it through region sync) do not show it done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from pdcore.adapters import codec
from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.sidecar.leader_link import address_of
from pdcore.domain.commands import RegionCommand
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc
from pdcore.service.streams import HeartbeatStreams

log = logging.getLogger("kubepd.steps")
DELIVER_TIMEOUT_S = 2.0


class Fence(Protocol):
    async def refusal(self, holder: str, term: int) -> str: ...


Term = tuple[str, int]  # (holder identity, leaseTransitions)


class StepRouter:
    def __init__(
        self,
        local: HeartbeatStreams,
        local_url: str,
        url_of: Callable[[int], str | None],
        term: Callable[[], Term | None],
        cluster_id: Callable[[], int],
        dial: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
    ) -> None:
        self.dial = dial
        self.local = local
        self.local_url = local_url
        self.url_of = url_of
        self.term = term
        self.cluster_id = cluster_id
        self._pending: dict[str, dict[int, list[RegionCommand]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._flushing: set[str] = set()
        self._channels: dict[str, tuple[grpc.aio.Channel, Any]] = {}
        self.delivered = 0
        self.refused = 0
        self.failed = 0
        self.unroutable = 0
        self.last_refusal = ""

    def send(self, store_id: int, command: RegionCommand) -> bool:
        if self.local.has(store_id):
            return self.local.send(store_id, command)
        url = self.url_of(store_id)
        if not url or url == self.local_url:
            self.unroutable += 1
            return False
        self._pending[url][store_id].append(command)
        if url not in self._flushing:
            self._flushing.add(url)
            asyncio.get_running_loop().create_task(self._flush(url))
        return True

    def _stub(self, url: str) -> Any:
        if url not in self._channels:
            channel = self.dial(address_of(url))
            self._channels[url] = (channel, kubepdpb_pb2_grpc.SidecarStub(channel))
        return self._channels[url][1]

    async def _flush(self, url: str) -> None:
        try:
            await asyncio.sleep(0)  # gather everything decided in this tick
            batches = self._pending.pop(url, {})
            term = self.term()
            if term is None:  # lost the role meanwhile: drop, the next holder decides
                return
            for store_id, commands in batches.items():
                await self._deliver(url, store_id, commands, term)
        finally:
            self._flushing.discard(url)
            if self._pending.get(url):
                self._flushing.add(url)
                asyncio.get_running_loop().create_task(self._flush(url))

    async def _deliver(
        self, url: str, store_id: int, commands: list[RegionCommand], term: Term
    ) -> None:
        cid = self.cluster_id()
        req = kubepdpb_pb2.DeliverStepsRequest(
            cluster_id=cid,
            scheduler=kubepdpb_pb2.SchedulerTerm(holder=term[0], term=term[1]),
            store_id=store_id,
            commands=[codec.command_to_pb(c, cid) for c in commands],
        )
        try:
            resp = await self._stub(url).DeliverSteps(req, timeout=DELIVER_TIMEOUT_S)
            self.delivered += resp.delivered
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.refused += len(commands)
                self.last_refusal = e.details() or ""
                log.warning("steps refused by %s: %s", url, e.details())
            else:
                self.failed += len(commands)
                log.info("steps for store %d not delivered to %s: %s", store_id, url, e.code())

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close(None)
        self._channels.clear()


class StepReceiver(kubepdpb_pb2_grpc.SidecarServicer):  # type: ignore[misc]
    def __init__(
        self, local: HeartbeatStreams, fence: Fence, cluster_id: Callable[[], int]
    ) -> None:
        self.local = local
        self.fence = fence
        self.cluster_id = cluster_id
        self.delivered = 0
        self.refused = 0

    async def DeliverSteps(self, request: Any, context: Ctx) -> Any:
        if request.cluster_id != self.cluster_id():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cluster id mismatch: this cluster is {self.cluster_id()}, "
                f"the request says {request.cluster_id}",
            )
        reason = await self.fence.refusal(request.scheduler.holder, request.scheduler.term)
        if reason:
            self.refused += len(request.commands)
            log.warning("refused steps: %s", reason)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, reason)
        store_id = request.store_id
        if not self.local.has(store_id):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the TiKV of store {store_id} has no heartbeat stream open to this sidecar",
            )
        delivered = 0
        for pb in request.commands:
            cmd = codec.command_from_pb(pb)
            if cmd is not None and self.local.send(store_id, cmd):
                delivered += 1
        self.delivered += delivered
        return kubepdpb_pb2.DeliverStepsResponse(delivered=delivered)
