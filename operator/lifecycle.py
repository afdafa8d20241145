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

import time
from dataclasses import dataclass, field

from pdcore.adapters.kube import convert, kinds
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


async def cluster_stores(client: KubeClient, body: Obj) -> list[Obj]:
    """The TiKVStore objects of the cluster `body` describes."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    listing = await client.list_objects(
        kinds.TIKV_STORES.path(ns), field_selector=f"spec.cluster={name}"
    )
    return listing.items


def _pod_store(stores: list[Obj], pod: str) -> Obj | None:
    """The live store of `pod`, else its tombstone, else None."""
    mine = [o for o in stores if ((o.get("status") or {}).get("sidecar") or {}).get("pod") == pod]
    live = [o for o in mine if (o.get("status") or {}).get("state") != "Tombstone"]
    found = live or mine
    return found[0] if found else None


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
    store = _pod_store(await cluster_stores(client, body), pod)
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


# -- rolling upgrade --------------------------------------------------------------------
EVICT_SINCE = "kubepd.io/evict-leaders-since"


@dataclass
class Upgrade:
    """What one look at a rolling upgrade decided."""

    partition: int | None  # the StatefulSet partition to set (None: leave it)
    reason: str
    message: str
    warning: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)


def _ordinal(pod: Obj) -> int:
    return int(pod["metadata"]["name"].rsplit("-", 1)[1])


def _ready(pod: Obj) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


async def _set_evict(client: KubeClient, ns: str, store: Obj, on: bool) -> None:
    note = convert.format_time(time.time()) if on else None
    await client.patch(
        kinds.TIKV_STORES.path(ns, store["metadata"]["name"]),
        {"metadata": {"annotations": {EVICT_SINCE: note}}, "spec": {"evictLeaders": on}},
    )


async def upgrade_step(
    client: KubeClient, body: Obj, sts: Obj, stores: list[Obj]
) -> Upgrade | None:
    """One step of a rolling upgrade (None when every pod runs the current template).

    The StatefulSet's partition holds every pod at its revision; pods are updated from
    the highest ordinal down, one at a time: evict the pod's leaders (TiKVStore
    spec.evictLeaders), wait until none is left or the timeout passes, lower the
    partition to that ordinal so the StatefulSet restarts the pod, wait until the new
    pod is Ready, end the eviction, go on."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    revision = (sts.get("status") or {}).get("updateRevision")
    if not revision:
        return None
    replicas = int(sts["spec"]["replicas"])
    rolling = (sts["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
    partition = int(rolling.get("partition", 0))
    pods = (
        await client.list_objects(
            f"/api/v1/namespaces/{ns}/pods", label_selector=f"app.kubernetes.io/instance={name}"
        )
    ).items
    pods = [
        p for p in pods if _ordinal(p) < replicas and not p["metadata"].get("deletionTimestamp")
    ]
    events: list[tuple[str, str]] = []
    current = [
        p for p in pods if p["metadata"]["labels"].get("controller-revision-hash") == revision
    ]
    for pod in current:  # updated and ready again: its leaders may come back
        store = _pod_store(stores, pod["metadata"]["name"])
        if store is not None and store["spec"].get("evictLeaders") and _ready(pod):
            await _set_evict(client, ns, store, False)
            events.append(("Upgraded", f"pod {pod['metadata']['name']} runs the new revision"))
    outdated = sorted((p for p in pods if p not in current), key=_ordinal, reverse=True)
    if not outdated:
        if (
            partition != replicas and len(current) == replicas
        ):  # hold every pod until the next template change
            return Upgrade(replicas, "Done", "every pod runs the new revision", events=events)
        return None if not events else Upgrade(None, "Done", "upgrade finished", events=events)
    waiting = [p["metadata"]["name"] for p in current if not _ready(p) and _ordinal(p) >= partition]
    if waiting:
        return Upgrade(
            None, "Restarting", f"waiting for pod {waiting[0]} to be ready", events=events
        )
    pod = outdated[0]
    pod_name, k = pod["metadata"]["name"], _ordinal(pod)
    store = _pod_store(stores, pod_name)
    if store is None or (store.get("status") or {}).get("state") == "Tombstone":
        events.append(("Restarting", f"restarting pod {pod_name} (no live store)"))
        return Upgrade(k, "Restarting", f"restarting pod {pod_name}", events=events)
    sid = store["spec"]["storeID"]
    if not store["spec"].get("evictLeaders"):
        await _set_evict(client, ns, store, True)
        events.append(("EvictingLeaders", f"evicting leaders from store {sid} of pod {pod_name}"))
        return Upgrade(None, "EvictingLeaders", f"evicting leaders of {pod_name}", events=events)
    leaders = (store.get("status") or {}).get("leaderCount")
    notes = store["metadata"].get("annotations") or {}
    since = convert.parse_time(notes[EVICT_SINCE]) if notes.get(EVICT_SINCE) else time.time()
    timeout = float(body["spec"].get("leaderEvictionTimeoutSeconds", 600))
    if leaders != 0:
        if time.time() - since < timeout:
            return Upgrade(
                None,
                "EvictingLeaders",
                f"store {sid} of pod {pod_name}: {leaders if leaders is not None else '?'} "
                "leaders left",
                events=events,
            )
        events.append(
            ("LeaderEvictionStalled",
             f"store {sid} still has {leaders} leaders after {timeout:.0f}s; restarting anyway")
        )  # fmt: skip
    events.append(("Restarting", f"restarting pod {pod_name} with the new revision"))
    return Upgrade(
        k,
        "LeaderEvictionStalled" if leaders != 0 else "Restarting",
        f"restarting pod {pod_name}",
        warning=leaders != 0,
        events=events,
    )


# -- replacing a dead store -------------------------------------------------------------
REPLACED = "kubepd.io/replaced"


async def replace_step(
    client: KubeClient, body: Obj, sts: Obj, stores: list[Obj]
) -> ScaleIn | None:
    """A pod whose store stays down past max-store-down-time gets a new store: the store
    is drained (its replicas are rebuilt from the other copies), and once PD has made it
    Tombstone the pod and its volume are deleted, so the StatefulSet brings the pod back
    empty and its TiKV registers a new store. One pod at a time."""
    if not body["spec"].get("replaceDownStores", True):
        return None
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    replicas = int(sts["spec"]["replicas"])
    for store in stores:
        status = store.get("status") or {}
        pod = (status.get("sidecar") or {}).get("pod", "")
        notes = store["metadata"].get("annotations") or {}
        if not pod.startswith(f"{name}-") or int(pod.rsplit("-", 1)[1]) >= replicas:
            continue
        if notes.get(REPLACED):
            continue
        sid = store["spec"]["storeID"]
        path = kinds.TIKV_STORES.path(ns, store["metadata"]["name"])
        if status.get("state") == "Tombstone" and store["spec"].get("desiredState") == "Offline":
            for kind, obj in (("persistentvolumeclaims", f"data-{pod}"), ("pods", pod)):
                try:
                    await client.delete(f"/api/v1/namespaces/{ns}/{kind}/{obj}")
                except NotFound:
                    pass
            await client.patch(path, {"metadata": {"annotations": {REPLACED: "true"}}})
            return ScaleIn(
                replicas,
                "Replaced",
                f"pod {pod} gets a new store in place of store {sid}",
                events=[("StoreReplaced", f"store {sid} is tombstone; recreating pod {pod}")],
            )
        if status.get("down") and status.get("state") != "Tombstone":
            events = []
            if store["spec"].get("desiredState") != "Offline":
                await client.patch(path, {"spec": {"desiredState": "Offline"}})
                events.append(
                    ("ReplacingStore",
                     f"store {sid} of pod {pod} is down past max-store-down-time; "
                     "rebuilding its replicas elsewhere")
                )  # fmt: skip
            drain = status.get("drain") or {}
            blocked = drain.get("state") == "Blocked"
            return ScaleIn(
                replicas,
                "ReplaceBlocked" if blocked else "Replacing",
                f"store {sid} of pod {pod} is down: "
                + (drain.get("message", "") if blocked else f"{status.get('regionCount', '?')} "
                   "regions left to rebuild"),
                warning=blocked,
                events=events,
            )  # fmt: skip
    return None
