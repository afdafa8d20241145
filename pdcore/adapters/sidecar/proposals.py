"""Proposals of store-scoped policies, from the sidecars to the scheduler role's holder.

* `ProposeService` is the holder's side (`kubepdpb.Scheduler`): it admits each proposal
  exactly as it admits a cluster-scoped policy's (epoch, filters, store and schedule
  limits, placement rules), so the global limits hold however many sidecars propose.
  A process that does not hold the role refuses the whole call (FAILED_PRECONDITION):
  proposals must never become operators outside the fenced path.
* `Proposer` is the sidecar's side: it finds the holder from the `<cluster>-scheduler`
  Lease (`<identity>@<url>`) and calls it.
* `LeaderStores` is what a store-scoped run sees in a follower sidecar: its synced
  region tree with the pd-leader's stores and their heartbeat figures (a follower hears
  only its own stores' heartbeats, so the others would look silent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from pdcore.adapters import codec
from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.sidecar.leader_link import address_of, url_of
from pdcore.policy.abi import Proposal, ProposalKind
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc
from pdcore.scheduling.cluster import ClusterView, MemoryCluster
from pdcore.service.policies import LoadedPolicy
from pdcore.service.scheduler_role import SchedulerRole

log = logging.getLogger("kubepd.proposals")
PROPOSE_TIMEOUT_S = 3.0


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0


class ProposeService(kubepdpb_pb2_grpc.SchedulerServicer):  # type: ignore[misc]
    def __init__(self, role: SchedulerRole, cluster_id: Callable[[], int]) -> None:
        self.role = role
        self.cluster_id = cluster_id
        self.tallies: dict[str, Tally] = {}  # per policy, while this process runs

    async def Propose(self, request: Any, context: Ctx) -> Any:
        if not self.role.active():
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "not the scheduler role's holder: proposals go to the current holder",
            )
        if request.cluster_id != self.cluster_id():
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"cluster id {request.cluster_id} is not this cluster's {self.cluster_id()}",
            )
        tally = self.tallies.setdefault(request.policy, Tally())
        verdicts = []
        # A new holder admits proposals only once prepared, as it runs its own schedulers.
        prepared = self.role.scheduling.scheduling_now()
        for p in request.proposals:
            if prepared:
                ok, why = self.admit(request.policy, request.store_id, p)
            else:
                ok, why = False, f"not scheduling yet: {self.role.scheduling.prepare.reason}"
            if ok:
                tally.accepted += 1
            else:
                tally.rejected += 1
            verdicts.append(kubepdpb_pb2.ProposalVerdict(accepted=ok, reason=why))
        return kubepdpb_pb2.ProposeResponse(verdicts=verdicts)

    def admit(self, policy: str, store_id: int, p: Any) -> tuple[bool, str]:
        """Decode the wire proposal; the admission itself is the local policies' own."""
        try:
            kind = ProposalKind(p.kind)
        except ValueError:
            return False, f"unknown proposal kind {p.kind}"
        prop = Proposal(
            kind,
            p.region_id,
            p.conf_ver,
            p.version,
            p.source_store,
            p.target_store,
            p.reason,
        )
        return self.role.admit(policy, prop, leading_store=store_id)


class Proposer:
    def __init__(
        self,
        holder: Callable[[], str],
        cluster_id: Callable[[], int],
        dial: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
    ) -> None:
        self.holder = holder  # the scheduler Lease's holderIdentity
        self.dial = dial
        self.cluster_id = cluster_id
        self._address = ""
        self._channel: grpc.aio.Channel | None = None

    async def __call__(
        self, policy: LoadedPolicy, store_id: int, proposals: Sequence[Proposal]
    ) -> list[tuple[bool, str]]:
        address = address_of(url_of(self.holder()))
        if not address:
            raise RuntimeError("no scheduler role holder with an address")
        if address != self._address or self._channel is None:
            await self.close()
            self._address, self._channel = address, self.dial(address)
        req = kubepdpb_pb2.ProposeRequest(
            cluster_id=self.cluster_id(),
            policy=policy.name,
            store_id=store_id,
            proposals=[
                kubepdpb_pb2.Proposal(
                    kind=int(p.kind),
                    region_id=p.region_id,
                    conf_ver=p.conf_ver,
                    version=p.version,
                    source_store=p.source_store,
                    target_store=p.target_store,
                    reason=p.reason,
                )
                for p in proposals
            ],
        )
        try:
            resp = await kubepdpb_pb2_grpc.SchedulerStub(self._channel).Propose(
                req, timeout=PROPOSE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as e:
            raise RuntimeError(f"Propose to {address}: {e.details()}") from None
        return [(v.accepted, v.reason) for v in resp.verdicts]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


STORES_FRESH_S = 1.0


class LeaderStores:
    def __init__(
        self,
        local: ClusterView,
        is_leader: Callable[[], bool],
        leader: Callable[[], str],
        cluster_id: Callable[[], int],
        dial: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
    ) -> None:
        self.dial = dial
        self.local = local
        self.is_leader = is_leader
        self.leader = leader  # the pd-leader Lease's holderIdentity
        self.cluster_id = cluster_id
        self._cached: MemoryCluster | None = None
        self._at = float("-inf")
        self._address = ""
        self._channel: grpc.aio.Channel | None = None

    async def __call__(self) -> ClusterView:
        if self.is_leader():
            return self.local
        if self._cached is not None and time.monotonic() - self._at < STORES_FRESH_S:
            self._cached.tree, self._cached.config = self.local.tree, self.local.config
            return self._cached
        address = address_of(url_of(self.leader()))
        if not address:
            return self.local
        if address != self._address or self._channel is None:
            await self.close()
            self._address, self._channel = address, self.dial(address)
        try:
            resp = await kubepdpb_pb2_grpc.LeaderStub(self._channel).GetStores(
                kubepdpb_pb2.GetStoresRequest(cluster_id=self.cluster_id()), timeout=2.0
            )
        except grpc.aio.AioRpcError as e:
            log.info("stores not read from the pd-leader: %s", e.details())
            return self.local  # its own stores at least are current
        stores = (codec.store_info_from_pb(s) for s in resp.stores)
        self._cached = MemoryCluster(self.local.tree, self.local.config, {s.id: s for s in stores})
        self._at = time.monotonic()
        return self._cached

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
