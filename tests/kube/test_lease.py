"""Lease roles on the real API server: exactly one holder, fencing tokens that grow,
and a holder that stops serving before anyone else can take over."""

from __future__ import annotations

import asyncio
import time

from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.lease import LeaseRole


async def test_two_candidates_never_hold_at_once(kube: KubeClient, namespace: str) -> None:
    a = LeaseRole(kube, namespace, "pd-leader", "a", lease_duration_s=2.0, renew_period_s=0.3)
    b = LeaseRole(kube, namespace, "pd-leader", "b", lease_duration_s=2.0, renew_period_s=0.3)
    a.start()
    b.start()
    both = 0
    held = []
    for _ in range(40):
        await asyncio.sleep(0.1)
        if a.is_held() and b.is_held():
            both += 1
        held.append((a.is_held(), b.is_held()))
    assert both == 0
    assert any(x or y for x, y in held[10:])
    holder, other = (a, b) if a.is_held() else (b, a)
    token = holder.token
    # The holder dies without releasing: it stops renewing.
    await holder.stop(release=False)
    lost_at = time.monotonic()
    while not other.is_held():
        assert time.monotonic() - lost_at < 5.0, "no failover within 5 s"
        await asyncio.sleep(0.05)
    assert not holder.is_held()
    assert other.token == token + 1
    await other.stop()


async def test_holder_steps_down_when_it_cannot_renew(kube: KubeClient, namespace: str) -> None:
    role = LeaseRole(kube, namespace, "scheduler", "op", lease_duration_s=2.0, renew_period_s=0.5)
    assert await role.try_once()
    assert role.is_held()
    await asyncio.sleep(2.0 - role.margin + 0.05)  # no renewals
    assert not role.is_held()


async def test_release_hands_over_at_once(kube: KubeClient, namespace: str) -> None:
    a = LeaseRole(kube, namespace, "r", "a", lease_duration_s=10.0, renew_period_s=1.0)
    b = LeaseRole(kube, namespace, "r", "b", lease_duration_s=10.0, renew_period_s=1.0)
    assert await a.try_once() and not await b.try_once()
    await a.release()
    assert await b.try_once() and b.token == a.token + 1
