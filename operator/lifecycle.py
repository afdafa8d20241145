"""Store lifecycle on scale-in, the way PD users expect it: never shrink the StatefulSet
under a store that still holds regions.

When spec.replicas falls below the StatefulSet's, the highest ordinal's store (found by
the sidecar's announcement in TiKVStore status) is asked to drain — spec.desiredState
Offline, which the pd-leader carries out — and only once PD has made it Tombstone does
the StatefulSet lose that pod, and the pod's volume too when scaleInPVCPolicy is Delete.
A drain PD refuses (too few stores left for max-replicas) is reported, never forced.
One pod at a time; each step is taken again on the next look, so a restart of the
operator resumes where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import KubeClient, NotFound, Obj

STS_PATH = "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}"


@dataclass
class ScaleIn:
    """What one look at a scale-in decided."""

    replicas: int  # what the StatefulSet should have now
    reason: str = ""  # "" when no scale-in is under way
    message: str = ""
    warning: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)


def _pod_store(stores: list[Obj], pod: str) -> Obj | None:
    """The live store of `pod`, else its tombstone, else None."""
    mine = [o for o in stores if ((o.get("status") or {}).get("sidecar") or {}).get("pod") == pod]
    live = [o for o in mine if (o.get("status") or {}).get("state") != "Tombstone"]
    return (live or mine or [None])[0]


async def scale_in_step(client: KubeClient, body: Obj) -> ScaleIn | None:
    """One step of a scale-in under way (None when there is none)."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    want = int(body["spec"]["replicas"])
    try:
        sts = await client.get(STS_PATH.format(ns=ns, name=name))
    except NotFound:
        return None
    current = int(sts["spec"]["replicas"])
    if want >= current:
        return None
    pod = f"{name}-{current - 1}"
    listing = await client.list_objects(
        kinds.TIKV_STORES.path(ns), field_selector=f"spec.cluster={name}"
    )
    store = _pod_store(listing.items, pod)
    if store is None:
        return ScaleIn(
            current - 1,
            "Removed",
            f"pod {pod} had no store; removed",
            events=[("ScaledIn", f"removed pod {pod}, which held no store")],
        )
    sid = store["spec"]["storeID"]
    status = store.get("status") or {}
    if status.get("state") == "Tombstone":
        events = [("ScaledIn", f"store {sid} of pod {pod} is tombstone; pod removed")]
        if body["spec"].get("scaleInPVCPolicy", "Delete") == "Delete":
            try:
                await client.delete(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-{pod}")
                events.append(("VolumeDeleted", f"deleted volume data-{pod} of store {sid}"))
            except NotFound:
                pass
        return ScaleIn(current - 1, "Removed", f"store {sid} of pod {pod} removed", events=events)
    events = []
    if store["spec"].get("desiredState") != "Offline":
        await client.patch(
            kinds.TIKV_STORES.path(ns, store["metadata"]["name"]),
            {"spec": {"desiredState": "Offline"}},
        )
        events.append(("Draining", f"draining store {sid} of pod {pod} before removing it"))
    drain = status.get("drain") or {}
    if drain.get("state") == "Blocked":
        return ScaleIn(
            current,
            "DrainBlocked",
            f"store {sid} of pod {pod} cannot be drained: {drain.get('message', '')}",
            warning=True,
            events=events,
        )
    left = status.get("regionCount", "?")
    return ScaleIn(
        current,
        "Draining",
        f"draining store {sid} of pod {pod}: {left} regions left",
        events=events,
    )
