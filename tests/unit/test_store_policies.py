"""Store-scoped policies without a cluster: the holder's Propose validation, a sidecar's
runs over its own regions only, and the rate limit on Warning events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pdcore.adapters.kube.events import EventRecorder
from pdcore.adapters.sidecar.proposals import ProposeService
from pdcore.domain.commands import RegionCommand
from pdcore.policy.abi import Proposal, ProposalKind
from pdcore.policy.outcome import PolicyResult
from pdcore.policy.spec import PolicySpec
from pdcore.proto import kubepdpb_pb2
from pdcore.scheduling.cluster import MemoryCluster
from pdcore.service.policies import LoadedPolicy, PolicyService, admit
from pdcore.service.scheduler_role import SchedulerRole
from pdcore.service.scheduling import SchedulingService
from tests.unit.scheduling.helpers import NOW, cluster, region, store


@dataclass
class View(MemoryCluster):
    next_id: int = 5000

    async def alloc_id(self, count: int = 1) -> int:
        self.next_id += count
        return self.next_id

    async def bury_empty_offline_stores(self) -> list[int]:
        return []


@dataclass
class Sink:
    sent: list[tuple[int, RegionCommand]] = field(default_factory=list)

    def send(self, store_id: int, command: RegionCommand) -> bool:
        self.sent.append((store_id, command))
        return True


class Clock:
    def now_s(self) -> float:
        return NOW

    def monotonic_s(self) -> float:
        return NOW


def holder(active: bool = True) -> tuple[SchedulerRole, Sink]:
    """The scheduler role's holder over a four-store view (store 4 silent)."""
    base = cluster(
        [store(1), store(2), store(3), store(4, hb_age=10_000)],
        [region(1, [1, 2, 3], leader=1), region(2, [1, 2, 4], leader=2)],
    )
    view = View(base.tree, base.config, base.store_map)
    sink = Sink()
    return SchedulerRole(view, sink, Clock(), holds=lambda: active), sink  # type: ignore[arg-type]


def scheduling(active: bool = True) -> tuple[SchedulingService, Sink]:
    role, sink = holder(active)
    return role.scheduling, sink


def proposal(region_id: int, target: int, version: int = 1, kind: int = 1) -> Any:
    return kubepdpb_pb2.Proposal(
        kind=kind, region_id=region_id, conf_ver=1, version=version, target_store=target
    )


def test_the_holder_admits_a_valid_proposal_and_says_why_it_refuses_others() -> None:
    role, sink = holder()
    ps = ProposeService(role, lambda: 7)
    assert ps.admit("p", 1, proposal(1, 2, version=9)) == (
        False,
        "region 1 epoch changed since the snapshot",
    )
    assert ps.admit("p", 1, proposal(1, 1))[1] == "store 1 already leads region 1"
    assert ps.admit("p", 1, proposal(1, 4))[1] == "store 4 holds no voter of region 1"
    ok, why = ps.admit("p", 2, proposal(2, 4))  # store 4 is silent: not a leader target
    assert not ok and why.startswith("store 4:"), why
    assert ps.admit("p", 2, proposal(1, 2)) == (False, "region 1 is not led by store 2")
    assert ps.admit("p", 1, proposal(1, 2, kind=9)) == (False, "unknown proposal kind 9")
    assert not sink.sent
    assert ps.admit("p", 1, proposal(1, 2)) == (True, "")
    assert [sid for sid, _ in sink.sent] == [1]  # the first step, to the leader's store
    assert role.scheduling.coordinator.controller.running[1].scheduler == "policy:p"
    # The region has an operator now: a second one is refused by the controller.
    ok, why = ps.admit("p", 1, proposal(1, 3))
    assert not ok and why


class Module:
    digest = "d"

    def __init__(self, proposals: list[Proposal]) -> None:
        self.proposals = proposals
        self.region_counts: list[int] = []

    def run(self, snapshot: bytes) -> PolicyResult:
        self.region_counts.append(int.from_bytes(snapshot[12:16], "little"))
        return PolicyResult(self.proposals, fuel_used=0, wall_ms=1.0)


async def test_a_store_scoped_run_sees_its_own_regions_and_proposes_remotely() -> None:
    svc, sink = scheduling(active=False)  # not the holder: it must not make operators
    sent: list[tuple[str, int, list[Proposal]]] = []

    async def propose(policy: LoadedPolicy, store_id: int, props: Any) -> list[tuple[bool, str]]:
        sent.append((policy.name, store_id, list(props)))
        return [(True, ""), (False, "limits reached")][: len(props)]

    service = PolicyService(svc, local_stores=lambda: {1}, propose=propose)
    assert service.active()
    props = [
        Proposal(ProposalKind.TRANSFER_LEADER, 1, 1, 1, 0, 2, "a"),
        Proposal(ProposalKind.TRANSFER_LEADER, 1, 1, 1, 0, 3, "b"),
    ]
    module = Module(props)
    spec = PolicySpec.parse(
        {"name": "p", "module": b"\0asm", "interval_s": 1.0, "max_proposals": 8, "scope": "store"}
    )
    policy = LoadedPolicy(spec, module)
    service.put(policy)
    await service.run_once(policy)
    assert module.region_counts == [1]  # region 2 is led by store 2, not local
    assert sent == [("p", 1, props)]
    assert (policy.runs, policy.accepted, policy.rejected) == (1, 1, 1)
    assert list(policy.rejections) == ["region 1: limits reached"]
    assert not sink.sent and not svc.coordinator.controller.running
    assert not PolicyService(svc, local_stores=set, propose=propose).active()


class Client:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body


async def test_warning_events_are_rate_limited_per_reason_and_object() -> None:
    client = Client()
    rec = EventRecorder(client, "ns", "kubepd-sidecar", "pod-0")  # type: ignore[arg-type]
    obj = {"kind": "SchedulingPolicy", "metadata": {"name": "p", "uid": "u1"}}
    other = {"kind": "SchedulingPolicy", "metadata": {"name": "q", "uid": "u2"}}
    assert rec.warn(obj, "PolicyTrapped", "trap: 1")
    assert not rec.warn(obj, "PolicyTrapped", "trap: 2")
    assert rec.warn(obj, "PolicyDisabled", "off")
    assert rec.warn(other, "PolicyTrapped", "trap")
    await asyncio.sleep(0.01)
    assert [(e["reason"], e["involvedObject"]["name"]) for e in client.created] == [
        ("PolicyTrapped", "p"),
        ("PolicyDisabled", "p"),
        ("PolicyTrapped", "q"),
    ]
    assert all(e["type"] == "Warning" for e in client.created)
    assert client.created[0]["message"] == "trap: 1"


def test_local_and_proposed_operators_are_admitted_by_the_same_path() -> None:
    """A cluster-scoped policy's proposal (admit here) and a sidecar's (ProposeService)
    get the same verdicts; the proposing store's lead is the only extra condition."""
    cases = [(1, 2, 9), (1, 1, 1), (1, 4, 1), (2, 4, 1), (1, 2, 1)]
    verdicts = []
    for local in (True, False):
        role, _ = holder()
        svc = role.scheduling
        ps = ProposeService(role, lambda: 7)
        out = []
        for region_id, target, version in cases:
            leader = svc.view.tree.get(region_id)
            assert leader is not None
            wire = proposal(region_id, target, version=version)
            if local:
                prop = Proposal(ProposalKind.TRANSFER_LEADER, region_id, 1, version, 0, target, "")
                out.append(admit(svc, "p", prop))
            else:
                out.append(ps.admit("p", leader.leader_store_id, wire))
        verdicts.append(out)
        assert svc.coordinator.controller.running[1].scheduler == "policy:p"
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][-1] == (True, "") and not any(ok for ok, _ in verdicts[0][:-1])
