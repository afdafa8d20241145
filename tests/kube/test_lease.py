"""Lease roles on the real API server: never two holders, fencing tokens that grow, a
holder that stops serving before anyone else can take over (even when it is cut off
from the API server), and the scheduler role handed between the pd-leader and the
operator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pdcore.adapters.kube import roles
from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.lease import LeaseRole
from tests.support.kubecluster import KubeCluster

D, R = 2.0, 0.3  # short leases: 2 s, renewed every 0.3 s (margin 0.4 s)


class Partition:
    """A TCP relay to the API server that the test can cut: while cut, no byte moves
    either way and new connections hang — a network partition, not a refusal."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.healed = asyncio.Event()
        self.healed.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.healed.clear()

    def heal(self) -> None:
        self.healed.set()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.healed.wait()
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_w]
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                await self.healed.wait()
                dst.write(data)
                await dst.drain()
        dst.close()

    async def close(self) -> None:
        self.heal()
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def clients(kube_cluster: KubeCluster) -> AsyncIterator[Callable[[], KubeClient]]:
    """Each candidate gets its own connection, as separate pods would."""
    made: list[KubeClient] = []

    def make() -> KubeClient:
        made.append(KubeClient.from_kubeconfig(kube_cluster.kubeconfig))
        return made[-1]

    yield make
    for c in made:
        await c.close()


async def sample(
    candidates: list[LeaseRole], seconds: float, until: Callable[[], bool] | None = None
) -> list[tuple[bool, ...]]:
    """is_held() of every candidate every 10 ms for `seconds` (or until `until()`)."""
    out: list[tuple[bool, ...]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until()):
        out.append(tuple(c.is_held() for c in candidates))
        await asyncio.sleep(0.01)
    return out


def never_two(samples: list[tuple[bool, ...]]) -> bool:
    return all(sum(s) <= 1 for s in samples)


async def test_racing_candidates_never_hold_at_once(
    clients: Callable[[], KubeClient], namespace: str
) -> None:
    cands = [LeaseRole(clients(), namespace, "c-pd-leader", f"pod-{i}", D, R) for i in range(3)]
    for c in cands:
        c.start()
    samples = await sample(cands, 3.0)
    assert never_two(samples)
    assert all(sum(s) == 1 for s in samples[-100:]), "nobody held the lease steadily"
    holder = next(c for c in cands if c.is_held())
    token = holder.token
    # The holder dies without releasing: the others take over after expiry, one of them.
    await holder.stop(release=False)
    rest = [c for c in cands if c is not holder]
    died = time.monotonic()
    samples = await sample(rest, 6.0, until=lambda: any(c.is_held() for c in rest))
    assert never_two(samples)
    successor = next(c for c in rest if c.is_held())
    assert time.monotonic() - died >= D - R - 0.1  # not before the dead holder's lease ran out
    assert successor.token == token + 1
    assert never_two(await sample(rest, 1.0))
    for c in rest:
        await c.stop()


async def test_a_cut_off_holder_stops_before_anyone_else_starts(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    proxy = Partition(kube_cluster.port)
    await proxy.start()
    base = KubeClient.from_kubeconfig(kube_cluster.kubeconfig).creds
    cut_client = KubeClient(dataclasses.replace(base, server=f"https://127.0.0.1:{proxy.port}"))
    other_client = KubeClient(base)
    events: list[tuple[float, str, bool]] = []

    def record(who: str) -> Callable[[bool], None]:
        return lambda held: events.append((time.monotonic(), who, held))

    a = LeaseRole(cut_client, namespace, "c-pd-leader", "a", D, R, on_change=record("a"))
    b = LeaseRole(other_client, namespace, "c-pd-leader", "b", D, R, on_change=record("b"))
    try:
        a.start()
        await asyncio.wait_for(a.acquired.wait(), 5)
        b.start()
        await asyncio.sleep(1.0)
        assert a.is_held() and not b.is_held() and b.holder == "a"
        token = a.token

        proxy.cut()
        cut_at = time.monotonic()
        samples = await sample([a, b], 8.0, until=b.is_held)
        assert b.is_held(), "b never took over"
        assert never_two(samples)
        a_lost = next(t for t, who, held in events if who == "a" and not held)
        b_won = next(t for t, who, held in events if who == "b" and held)
        assert a_lost < b_won
        # a lost the role on time, by its timer — it could not renew (nor hear back) at all.
        assert a_lost - cut_at <= D - a.margin + 0.1
        assert b_won - cut_at >= D - R - 0.1
        assert b.token == token + 1 and a.token == token

        proxy.heal()
        await asyncio.sleep(1.5)
        assert b.is_held() and not a.is_held() and a.holder == "b"
    finally:
        await a.stop(release=False)
        await b.stop()
        await cut_client.close()
        await other_client.close()
        await proxy.close()


async def test_release_hands_over_at_once(
    clients: Callable[[], KubeClient], namespace: str
) -> None:
    a = LeaseRole(clients(), namespace, "r", "a", lease_duration_s=10.0, renew_period_s=1.0)
    b = LeaseRole(clients(), namespace, "r", "b", lease_duration_s=10.0, renew_period_s=1.0)
    assert await a.try_once() and not await b.try_once()
    await a.release()
    assert not a.is_held()
    assert await b.try_once() and b.token == a.token + 1


async def test_someone_elses_write_does_not_end_the_term(
    clients: Callable[[], KubeClient], namespace: str
) -> None:
    """Annotating the Lease makes the holder's next renewal meet a 409; the validity of
    its last renewal stands and it renews again at once."""
    a = LeaseRole(clients(), namespace, "r", "a", D, R)
    a.start()
    await asyncio.wait_for(a.acquired.wait(), 5)
    token = a.token
    other = clients()
    path = a.path

    async def scribble() -> None:
        for i in range(30):
            await other.patch(path, {"metadata": {"annotations": {"scribble": str(i)}}})
            await asyncio.sleep(0.05)

    task = asyncio.create_task(scribble())
    samples = await sample([a], 2.0)
    await task
    assert all(s == (True,) for s in samples) and a.token == token
    await a.stop()


async def test_a_candidate_that_may_not_hold_gives_the_role_up(
    clients: Callable[[], KubeClient], namespace: str
) -> None:
    allowed = True
    a = LeaseRole(clients(), namespace, "r", "a", D, R)
    a.start(may_acquire=lambda: allowed)
    await asyncio.wait_for(a.acquired.wait(), 5)
    allowed = False
    await asyncio.wait_for(a.lost.wait(), 2)
    # `lost` comes first (stop serving), the release is written after it: wait for that.
    reader = clients()
    deadline = time.monotonic() + 10
    while "holderIdentity" in (await reader.get(a.path))["spec"]:
        assert time.monotonic() < deadline, "the role was given up but the Lease still names it"
        await asyncio.sleep(0.05)
    await a.stop()


async def test_the_scheduler_role_moves_between_pd_leader_and_operator(
    clients: Callable[[], KubeClient], namespace: str
) -> None:
    kw = {"lease_duration_s": D, "renew_period_s": R}
    leader = roles.pd_leader(clients(), namespace, "c", "pod-0", **kw)
    leader.start()
    await asyncio.wait_for(leader.acquired.wait(), 5)
    # Nobody else schedules: the pd-leader takes the role.
    fallback = roles.scheduler_fallback(clients(), namespace, "c", "pod-0", leader, **kw)
    await asyncio.wait_for(fallback.acquired.wait(), 5)
    first = fallback.token
    assert fallback.name == "c-scheduler"

    # The operator arrives: it asks, the pd-leader hands over, never both at once.
    op = roles.scheduler_preferred(clients(), namespace, "c", "operator", **kw)
    samples = await sample([fallback, op], 5.0, until=op.is_held)
    assert op.is_held() and never_two(samples)
    assert op.token == first + 1
    # ... and the pd-leader does not take it back while the operator lives.
    assert never_two(await sample([fallback, op], 2 * D))
    assert op.is_held() and not fallback.is_held()
    lease = await clients().get(op.path)
    assert "kubepd.io/preferred-holder" not in lease["metadata"].get("annotations", {})

    # The operator dies: after expiry the pd-leader schedules again.
    await op.stop(release=False)
    await asyncio.wait_for(fallback.acquired.wait(), 3 * D)
    assert fallback.token == first + 2

    # The pd-leader steps down: it stops scheduling too.
    await leader.stop()
    await asyncio.wait_for(fallback.lost.wait(), 2)
    assert not fallback.is_held()
    await fallback.stop()


async def test_the_lease_record_is_what_other_tools_expect(
    clients: Callable[[], KubeClient], namespace: str
) -> None:
    a = LeaseRole(clients(), namespace, "c-pd-leader", "pod-0@http://10.0.0.1:2379", 2.5, R)
    assert await a.try_once()
    spec = (await clients().get(a.path))["spec"]
    assert spec["holderIdentity"] == "pod-0@http://10.0.0.1:2379"
    assert spec["leaseDurationSeconds"] == 3  # rounded up: others wait at least as long
    assert spec["leaseTransitions"] == 1 and spec["renewTime"].endswith("Z")
    await a.stop()
