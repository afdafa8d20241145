"""A follower sidecar's link to the current pd-leader: who it is (from the Lease), one
channel to it, batched TSO, forwarded unary calls, and the region-sync stream that
keeps the local region cache current."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from pdcore.adapters import codec
from pdcore.domain.errors import NotLeader, PdError
from pdcore.domain.region import Region
from pdcore.domain.tso import LOGICAL_BITS, Timestamp
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc

log = logging.getLogger("kubepd.sidecar")
FORWARD_TIMEOUT_S = 5.0


async def _one_then_wait(req: Any, done: asyncio.Event) -> AsyncIterator[Any]:
    """A request stream that sends one message and stays open until `done`. Cancelling
    a call that has already ended leaves gRPC's task reading this stream waiting, so the
    reader ends it itself."""
    yield req
    await done.wait()


def url_of(identity: str) -> str:
    """Lease holder identities are `<pod>@<client url>`."""
    return identity.split("@", 1)[1] if "@" in identity else ""


def address_of(url: str) -> str:
    return url.split("://", 1)[-1]


class LeaderLink:
    def __init__(
        self,
        holder: Callable[[], str],
        cluster_id: Callable[[], int],
        own_url: str = "",
        dial: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
    ) -> None:
        self._holder = holder
        self._dial = dial
        self._own_url = own_url
        self._cluster_id = cluster_id
        self._address = ""
        self._channel: grpc.aio.Channel | None = None
        self.stub: pdpb_pb2_grpc.PDStub | None = None
        self._tso_waiters: list[tuple[int, asyncio.Future[Timestamp]]] = []
        self._tso_wake = asyncio.Event()
        self._tso_task: asyncio.Task[None] | None = None
        self.forwarded = 0
        self.tso_batches = 0
        self.in_sync = False  # the region-sync stream from the pd-leader is flowing

    def current(self) -> pdpb_pb2_grpc.PDStub:
        url = url_of(self._holder())
        if not url:
            raise NotLeader("no pd-leader is known yet")
        if url == self._own_url:
            # The Lease still names us but we no longer hold it (it could not be renewed):
            # forwarding to ourselves would only wait out the timeout.
            raise NotLeader("the pd-leader Lease has lapsed and nobody holds it yet")
        address = address_of(url)
        if address != self._address or self.stub is None:
            if self._channel is not None:
                asyncio.get_running_loop().create_task(self._channel.close(None))
            self._address = address
            self._channel = self._dial(address)
            self.stub = pdpb_pb2_grpc.PDStub(self._channel)
        return self.stub

    def channel(self) -> grpc.aio.Channel:
        """The channel to the current pd-leader, for services other than pdpb.PD."""
        self.current()
        assert self._channel is not None
        return self._channel

    async def forward(
        self, method: str, request: Any, metadata: tuple[tuple[str, str], ...] = ()
    ) -> Any:
        """Send a unary request to the leader unchanged; transport failures become
        NotLeader so clients retry as they do with PD."""
        stub = self.current()
        self.forwarded += 1
        try:
            return await getattr(stub, method)(
                request, timeout=FORWARD_TIMEOUT_S, metadata=metadata or None
            )
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise NotLeader(f"pd-leader {self._address} unreachable: {e.details()}") from None
            raise

    # -- TSO, batched: concurrent requests become one request to the leader -------------
    async def tso(self, count: int) -> Timestamp:
        fut: asyncio.Future[Timestamp] = asyncio.get_running_loop().create_future()
        self._tso_waiters.append((count, fut))
        self._tso_wake.set()
        if self._tso_task is None or self._tso_task.done():
            self._tso_task = asyncio.get_running_loop().create_task(self._tso_loop())
        return await fut

    async def _tso_loop(self) -> None:
        call: Any = None
        call_addr = ""
        batch: list[tuple[int, asyncio.Future[Timestamp]]] = []
        try:
            while True:
                await self._tso_wake.wait()
                self._tso_wake.clear()
                batch, self._tso_waiters = self._tso_waiters, []
                if not batch:
                    continue
                try:
                    stub = self.current()  # follows the Lease to a new pd-leader
                    if call is None or call_addr != self._address:
                        if call is not None:
                            call.cancel()
                        call, call_addr = stub.Tso(), self._address
                    self._resolve(batch, await self._tso_once(call, batch))
                except Exception as e:
                    # Any failure — a status, a closed stream, a timeout, or gRPC's
                    # InvalidStateError on a finished call — ends this stream and answers
                    # the batch with NotLeader (UNAVAILABLE), which PD clients retry.
                    if call is not None:
                        call.cancel()
                    call = None
                    err = (
                        e
                        if isinstance(e, NotLeader)
                        else NotLeader(f"tso forwarding failed: {e!r}")
                    )
                    self._fail(batch, err)
                batch = []
        finally:  # cancelled (close) or a bug: nobody may be left waiting
            if call is not None:
                call.cancel()
            self._fail(batch + self._tso_waiters, NotLeader("tso relay stopped"))
            self._tso_waiters = []

    async def _tso_once(self, call: Any, batch: list[tuple[int, asyncio.Future[Timestamp]]]) -> int:
        """One request for the whole batch; the top of the leader's range."""
        total = sum(c for c, _ in batch)
        await asyncio.wait_for(
            call.write(
                pdpb_pb2.TsoRequest(
                    header=pdpb_pb2.RequestHeader(cluster_id=self._cluster_id()), count=total
                )
            ),
            FORWARD_TIMEOUT_S,
        )
        resp = await asyncio.wait_for(call.read(), FORWARD_TIMEOUT_S)
        if resp is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise NotLeader("tso stream closed")
        self.tso_batches += 1
        return int((resp.timestamp.physical << LOGICAL_BITS) | resp.timestamp.logical)

    @staticmethod
    def _resolve(batch: list[tuple[int, asyncio.Future[Timestamp]]], top: int) -> None:
        # The leader's batch is top-total+1 .. top; hand out consecutive slices.
        end = top - sum(c for c, _ in batch)
        for count, fut in batch:
            end += count
            if not fut.done():
                fut.set_result(Timestamp(end >> LOGICAL_BITS, end & ((1 << LOGICAL_BITS) - 1)))

    @staticmethod
    def _fail(batch: list[tuple[int, asyncio.Future[Timestamp]]], err: Exception) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)

    # -- region sync ----------------------------------------------------------------------
    async def sync_regions(
        self,
        apply: Callable[[Region], None],
        member: pdpb_pb2.Member,
        is_follower: Callable[[], bool],
        caught_up: Callable[[], None] | None = None,
    ) -> None:
        """Keep the local cache in sync while this sidecar follows; reconnects forever.
        `caught_up` is called when the leader's whole tree has arrived (an empty batch
        ends it) — the view is complete from then on."""
        while True:
            if not is_follower():
                await asyncio.sleep(0.5)
                continue
            call = None
            done = asyncio.Event()
            try:
                stub = self.current()
                req = pdpb_pb2.SyncRegionRequest(
                    header=pdpb_pb2.RequestHeader(cluster_id=self._cluster_id()), member=member
                )
                call = stub.SyncRegions(_one_then_wait(req, done))
                async for resp in call:
                    self.in_sync = True
                    if not resp.regions and caught_up is not None:
                        caught_up()
                    for region in codec.regions_from_sync(resp):
                        apply(region)
                    if not is_follower():
                        break
            except (grpc.aio.AioRpcError, NotLeader, PdError) as e:
                log.debug("region sync interrupted: %s", e)
            except Exception:  # a bug in applying: logged, and the sync starts over
                log.exception("region sync failed")
            finally:
                self.in_sync = False
                done.set()
                if call is not None:
                    call.cancel()
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._tso_task is not None:
            self._tso_task.cancel()  # its own waiters are failed as it ends
        self._fail(self._tso_waiters, NotLeader("tso relay stopped"))  # not yet picked up
        self._tso_waiters = []
        if self._channel is not None:
            await self._channel.close(None)
