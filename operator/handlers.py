"""The kopf handlers: reconcile each TiKVCluster into the objects of `resources`,
idempotently, with conditions, a phase and events.

Run with `kopf run -m pd_operator.handlers --all-namespaces` (or `-n NS`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from typing import Any

import kopf
from pd_operator import lifecycle, resources, tls

from pdcore.adapters.kube.client import ApiError, Conflict, KubeClient, NotFound

GROUP, VERSION, PLURAL = "kubepd.io", "v1alpha1", "tikvclusters"
CLIENT = "client"  # the memo's key of the operator's KubeClient

PATHS = {
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
}


def client(memo: kopf.Memo) -> KubeClient:
    """The operator's client, kept in kopf's memo: made at start-up on the operator's
    own event loop (an HTTP session belongs to one), closed at cleanup; every run of
    the operator (an embedding may run kopf more than once) has its own."""
    c = memo.get(CLIENT)
    if not isinstance(c, KubeClient):
        raise RuntimeError("the operator's Kubernetes client is made at start-up")
    return c


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = 20  # INFO and above become Kubernetes events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = "kubepd.io/finalizer"
    memo[CLIENT] = KubeClient.auto()


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Credentials from $KUBECONFIG or the pod's service account, as the sidecars use
    (start-up runs before the first login)."""
    c = client(memo)
    return kopf.ConnectionInfo(server=c.server, ca_path=c.ca_file, token=c.token)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    c = memo.pop(CLIENT, None)
    if isinstance(c, KubeClient):
        await c.close()


async def apply(kube: KubeClient, obj: dict[str, Any]) -> str:
    """Create or update one owned object; returns what happened."""
    base, plural = PATHS[obj["kind"]]
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    path = f"{base}/namespaces/{ns}/{plural}"
    try:
        current = await kube.get(f"{path}/{name}")
    except NotFound:
        await kube.create(path, obj)
        return "created"
    # The parts we own: spec, data, or a RoleBinding's subjects (its roleRef is immutable).
    keys = [k for k in ("spec", "data", "subjects") if k in obj]
    desired = {k: obj[k] for k in keys}
    if obj["kind"] == "Service":  # clusterIP etc. are set by the API server
        desired["spec"] = {**current.get("spec", {}), **obj["spec"]}
    if (
        all(current.get(k) == v for k, v in desired.items())
        and current["metadata"].get("labels") == obj["metadata"]["labels"]
    ):
        return "unchanged"
    await kube.patch(
        f"{path}/{name}",
        {"metadata": {"labels": obj["metadata"]["labels"]}, **{k: obj[k] for k in keys}},
    )
    return "updated"


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: kopf.Memo, **_: Any
) -> None:
    kube = client(memo)
    raw = dict(body)
    ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    partition = None
    try:  # never shrink under a store: scale-in goes one drained store at a time (observe)
        sts = await kube.get(lifecycle.STS_PATH.format(ns=ns, name=name))
        current = int(sts["spec"]["replicas"])
        if current > int(raw["spec"]["replicas"]):
            raw = {**raw, "spec": {**raw["spec"], "replicas": current}}
        status = sts.get("status") or {}
        if status.get("updateRevision") != status.get("currentRevision"):  # mid-upgrade
            rolling = sts["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
            partition = int(rolling.get("partition", 0))
    except NotFound:
        pass
    actions = []
    for obj in resources.all_objects(raw, partition):
        try:
            what = await apply(kube, obj)
        except (ApiError, Conflict) as e:
            kopf.warn(
                body,
                reason="ReconcileFailed",
                message=f"{obj['kind']} {obj['metadata']['name']}: {e}",
            )
            raise kopf.TemporaryError(str(e), delay=5) from None
        if what != "unchanged":
            actions.append(f"{what} {obj['kind']} {obj['metadata']['name']}")
            kopf.info(
                body,
                reason=what.capitalize(),
                message=f"{what} {obj['kind']} {obj['metadata']['name']}",
            )
    patch.status["phase"] = (
        "Reconciling" if actions else body.get("status", {}).get("phase", "Reconciling")
    )
    patch.status["observedGeneration"] = body["metadata"].get("generation")
    patch.status["conditions"] = with_condition(
        body,
        condition("Reconciled", True, "Applied", "; ".join(actions) or "all objects up to date"),
    )
    logger.info("reconciled %s", raw["metadata"]["name"])


@kopf.timer(GROUP, VERSION, PLURAL, interval=5.0, idle=2.0)
async def observe(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Status that tells health at a glance: ready pods vs desired, and a phase."""
    kube = client(memo)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        sts = await kube.get(lifecycle.STS_PATH.format(ns=ns, name=name))
    except NotFound:
        return
    want = int(body["spec"]["replicas"])
    ready = int(sts.get("status", {}).get("readyReplicas", 0) or 0)
    phase = (
        "Running"
        if ready == want
        else ("Scaling" if sts["spec"]["replicas"] != want else "Progressing")
    )
    if (
        body.get("status", {}).get("readyReplicas") != ready
        or body.get("status", {}).get("phase") != phase
    ):
        patch.status["readyReplicas"] = ready
        patch.status["phase"] = phase
        patch.status["conditions"] = with_condition(
            body,
            condition("Ready", ready == want, phase, f"{ready} of {want} TiKV pods are ready"),
        )
    if await drive_scale_in(kube, body, patch, sts):
        return
    stores = await lifecycle.cluster_stores(kube, dict(body))  # one list for both steps
    if not await drive_replacement(kube, body, patch, sts, stores):
        await drive_upgrade(kube, body, patch, sts, stores)


async def drive_replacement(
    kube: KubeClient,
    body: kopf.Body,
    patch: kopf.Patch,
    sts: dict[str, Any],
    stores: list[dict[str, Any]],
) -> bool:
    """One step of replacing a dead store; whether one is under way."""
    raw = dict(body)
    step = await lifecycle.replace_step(kube, raw, sts, stores)
    if step is None:
        return False
    for reason, message in step.events:
        kopf.warn(body, reason=reason, message=message)
    patch.status["conditions"] = with_condition(
        body,
        condition("StoreReplacement", not step.warning, step.reason, step.message),
        patch,
    )
    return True


async def drive_upgrade(
    kube: KubeClient,
    body: kopf.Body,
    patch: kopf.Patch,
    sts: dict[str, Any],
    stores: list[dict[str, Any]],
) -> None:
    raw = dict(body)
    step = await lifecycle.upgrade_step(kube, raw, sts, stores)
    if step is None:
        return
    for reason, message in step.events:
        (kopf.warn if reason == "LeaderEvictionStalled" else kopf.info)(
            body, reason=reason, message=message
        )
    if step.partition is not None:
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        await kube.patch(
            lifecycle.STS_PATH.format(ns=ns, name=name),
            {"spec": {"updateStrategy": {"rollingUpdate": {"partition": step.partition}}}},
        )
    done = step.reason == "Done"
    if not done:
        patch.status["phase"] = "Upgrading"
    patch.status["conditions"] = with_condition(
        body,
        condition(
            "Upgrade",
            not done and not step.warning,
            step.reason,
            step.message,
        ),
        patch,
    )


async def drive_scale_in(
    kube: KubeClient, body: kopf.Body, patch: kopf.Patch, sts: dict[str, Any]
) -> bool:
    """One step of a scale-in; whether one is under way."""
    raw = dict(body)
    step = await lifecycle.scale_in_step(kube, raw)
    previous = next(
        (c for c in body.get("status", {}).get("conditions", []) if c["type"] == "ScaleIn"), None
    )
    if step is None:
        if previous is not None and previous["status"] == "True":
            patch.status["conditions"] = with_condition(
                body, condition("ScaleIn", False, "Done", "no scale-in under way"), patch
            )
        return False
    for reason, message in step.events:
        kopf.info(body, reason=reason, message=message)
    if step.warning and (previous is None or previous.get("message") != step.message):
        kopf.warn(body, reason=step.reason, message=step.message)
    if step.replicas != int(sts["spec"]["replicas"]):
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        await kube.patch(
            lifecycle.STS_PATH.format(ns=ns, name=name), {"spec": {"replicas": step.replicas}}
        )
    patch.status["phase"] = "Scaling"
    patch.status["conditions"] = with_condition(
        body,
        condition("ScaleIn", step.reason != "DrainBlocked", step.reason, step.message),
        patch,
    )
    return True


def with_condition(
    body: kopf.Body, cond: dict[str, Any], patch: kopf.Patch | None = None
) -> list[dict[str, Any]]:
    """The status conditions (as this patch leaves them, else as the body has them) with
    `cond` in place of its type's, the others kept."""
    base = (patch.status.get("conditions") if patch is not None else None) or body.get(
        "status", {}
    ).get("conditions", [])
    return [*(c for c in base if c["type"] != cond["type"]), cond]


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def scheduler(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any
) -> None:
    """The cluster's scheduler role, held here while the operator runs (ARCHITECTURE §2):
    the pd-leader hands it over and takes it back when this daemon is gone."""
    from pdcore.scheduler_app import SchedulerHost, SchedulerOptions

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    identity = f"operator-{socket.gethostname()}-{os.getpid()}"
    try:
        security = tls.operator_security(dict(body))
    except ValueError as e:
        kopf.warn(body, reason="TLS", message=str(e))
        raise kopf.TemporaryError(str(e), delay=60) from None
    host = SchedulerHost(
        SchedulerOptions(
            ns,
            name,
            identity,
            lease_duration_s=float(os.environ.get("KUBEPD_SIDECAR_LEASE_SECONDS", "5")),
            renew_period_s=float(os.environ.get("KUBEPD_SIDECAR_RENEW_SECONDS", "1")),
            # Sidecars send store-scoped policies' proposals here (any free port).
            grpc_addr="0.0.0.0:0" if os.environ.get("POD_IP") else None,
            # With TLS, a name its certificate carries (the chart gives the pod one).
            advertise_host=os.environ.get("KUBEPD_ADVERTISE_HOST") or os.environ.get("POD_IP"),
            security=security,
        ),
        client(memo),
    )
    await host.start()
    kopf.info(body, reason="Scheduling", message=f"{identity} runs the scheduler role")
    try:
        while not stopped:
            await asyncio.sleep(1.0)
    finally:
        await host.stop()
