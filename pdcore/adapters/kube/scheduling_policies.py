"""SchedulingPolicy objects become Wasm policies, added, replaced and removed live, with
their figures in status. `scope: cluster` ones run where the scheduler role is;
`scope: store` ones run in every sidecar over the regions its own stores lead, and their
proposals go to the role's holder (`StorePolicyResources`, bottom).

Every process that may take the role (the operator's SchedulerHost; a sidecar while it
is the pd-leader) follows its cluster's objects and keeps their modules compiled, so a
role change costs no fetch and no compile. PolicyService runs them only while this
process holds the role, and only the holder writes status: at most every
STATUS_MIN_INTERVAL_S per object, and only when it changed. Counts continue from the
status the previous holder wrote for the same generation and module.

A module comes from its source (policy_modules): inline, a ConfigMap key or an http(s)
URL. A source that cannot be read, a module that does not compile or speaks another ABI
make that object Failed with the reason; nothing else is affected. ConfigMaps are read
again every RESYNC_S (the sidecar role may get them, not watch them), so a new module
there replaces the policy; a source that could not be read is tried again on the same
beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pdcore.adapters.kube import convert, kinds, watching
from pdcore.adapters.kube.client import ApiError, KubeClient, NotFound, Obj
from pdcore.adapters.kube.events import EventRecorder
from pdcore.adapters.kube.policy_modules import ModuleSources, ModuleUnavailable, digest_of
from pdcore.policy.outcome import FailureKind, PolicyFailure
from pdcore.policy.spec import PolicySpec, map_keys
from pdcore.service.policies import LoadedPolicy, PolicyPhase, PolicyService, Proposer, ViewSource
from pdcore.service.scheduler_role import SchedulerRole

if TYPE_CHECKING:
    from pdcore.adapters.wasm.host import WasmHost

log = logging.getLogger("kubepd.kube.policies")
RESYNC_S = 10.0
RECONCILE_TICK_S = 1.0
STATUS_TICK_S = 1.0
STATUS_MIN_INTERVAL_S = 3.0
MAX_ERROR_CHARS = 4096


@dataclass
class Entry:
    """What this process knows of one SchedulingPolicy object."""

    uid: str
    generation: int
    from_config_map: bool = False
    digest: str = ""  # sha256 hex of the module bytes, once read
    policy: LoadedPolicy | None = None
    error: str = ""  # why there is no policy
    retry: bool = False
    # Counts carried over from status when this process took the role, so the figures
    # keep growing across holders; None while it does not hold the role.
    offset: tuple[int, int, int] | None = None
    seen_runs: int = 0
    last_run_time: str = ""
    ready: tuple[str, str, str] = ("", "", "")  # status, reason, lastTransitionTime
    written: Obj | None = None
    written_at: float = float("-inf")
    warned: bool = False  # its load failure has been posted as an event

    @property
    def key(self) -> tuple[str, int]:
        return self.uid, self.generation


# The CR's key spellings of PolicySpec's fields (the module's bytes come from its source).
CR_SPELLING = {
    "module.sha256": "sha256",
    "config": "config",
    "scope": "scope",
    "intervalSeconds": "interval_s",
    "priority": "priority",
    "failureStrategy": "failure_strategy",
    "limits.fuel": "fuel",
    "limits.memoryMiB": "memory_mib",
    "limits.timeoutMillis": "timeout_ms",
    "limits.maxProposals": "max_proposals",
}


def spec_from_object(name: str, spec: Obj, wasm: bytes) -> PolicySpec:
    """The spec a SchedulingPolicy object asks for; PolicySpecError says what is wrong."""
    return PolicySpec.parse({**map_keys(spec, CR_SPELLING), "name": name, "module": wasm})


def object_key(obj: Obj) -> tuple[str, int]:
    meta = obj["metadata"]
    return str(meta.get("uid", "")), int(meta.get("generation", 0))


FAILURE_REASONS = {FailureKind.TRAP: "PolicyTrapped", FailureKind.DEADLINE: "PolicyTimedOut"}


class SchedulingPolicyResources:
    scope = "cluster"

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        role: SchedulerRole,
        host: WasmHost,
        candidate: Callable[[], bool] | None = None,
        *,
        resync_s: float = RESYNC_S,
        status_min_interval_s: float = STATUS_MIN_INTERVAL_S,
        events: EventRecorder | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.active = role.active
        # Whether this process may take the role (a sidecar only while it is the
        # pd-leader): others keep no module loaded and read no source.
        self.candidate = candidate or (lambda: True)
        self.host = host
        self.sources = ModuleSources(client, namespace)
        self.events = events
        self.service = self._service(role)
        self.resync_s = resync_s
        self.status_min_interval_s = status_min_interval_s
        self.objects: dict[str, Obj] = {}
        self.entries: dict[str, Entry] = {}
        self.status_writes = 0
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _service(self, role: SchedulerRole) -> PolicyService:
        """The role's own cluster-scoped policy service (the role starts and stops it,
        and it runs only while the role is held and prepared)."""
        if role.policies is None:
            raise ValueError("the scheduler role was built without a policy catalog")
        role.on_policy_failure(self._failed)
        return role.policies

    def reporting(self) -> bool:
        """Whether this process writes status and posts events (the role's holder)."""
        return self.active()

    def _failed(self, policy: LoadedPolicy, failure: PolicyFailure) -> None:
        obj = self.objects.get(policy.name)
        if obj is None or self.events is None:
            return
        reason = FAILURE_REASONS.get(failure.kind, "PolicyFailed")
        self.events.warn(obj, reason, f"{self._where()}{failure.kind}: {failure.message}")
        if policy.phase == PolicyPhase.DISABLED:
            self.events.warn(
                obj, "PolicyDisabled", f"{self._where()}failureStrategy Disable stopped it"
            )

    def _where(self) -> str:
        return ""

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow()),
            loop.create_task(self._reconcile_loop()),
            loop.create_task(self._status_loop()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    # -- following the objects ------------------------------------------------------------
    async def _follow(self) -> None:
        async for objs in watching.follow(
            self.client,
            kinds.SCHEDULING_POLICIES.path(self.namespace),
            field_selector=f"spec.cluster={self.cluster}",
        ):
            # Each scope has its own runner: store-scoped ones run in every sidecar.
            self.objects = {
                name: obj
                for name, obj in objs.items()
                if (obj.get("spec") or {}).get("scope", "cluster") == self.scope
            }
            self._changed.set()

    async def _reconcile_loop(self) -> None:
        last_resync = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RECONCILE_TICK_S)
            self._changed.clear()
            if not self.candidate():
                for name in list(self.entries):
                    self._unload(name)  # compiled modules stay cached in the host
                continue
            resync = time.monotonic() - last_resync >= self.resync_s
            if resync:
                last_resync = time.monotonic()
            try:
                await self.reconcile(resync)
            except Exception:
                log.exception("SchedulingPolicy reconcile failed")

    async def reconcile(self, resync: bool = False) -> None:
        """Load what is new or changed, unload what is gone; with `resync`, also read
        ConfigMaps again and retry sources that could not be read."""
        for name in [n for n in self.entries if n not in self.objects]:
            self._unload(name)
        # One at a time: a slow URL delays the others by at most its fetch timeout.
        for name, obj in list(self.objects.items()):
            entry = self.entries.get(name)
            current = entry if entry is not None and entry.key == object_key(obj) else None
            if current is None:
                await self._load(name, obj, None)
            elif resync and (current.retry or current.from_config_map):
                await self._load(name, obj, current)

    def _unload(self, name: str) -> None:
        self.entries.pop(name, None)
        if name in self.service.policies:
            self.service.remove(name)

    async def _load(self, name: str, obj: Obj, current: Entry | None) -> None:
        spec = obj.get("spec") or {}
        module = spec.get("module") or {}
        uid, generation = object_key(obj)
        entry = Entry(uid, generation, from_config_map="configMapRef" in module)
        try:
            wasm = await self.sources.read(module)
        except ModuleUnavailable as e:
            if current is not None and current.policy is not None:
                # A policy that runs keeps its module while its ConfigMap cannot be read.
                log.warning("policy %s: module not read again: %s", name, e)
                return
            entry.error, entry.retry = str(e), e.retry
        else:
            entry.digest = digest_of(wasm)
            if current is not None and current.digest == entry.digest and not current.retry:
                return  # the same module as before: nothing to replace
            try:
                entry.policy = await asyncio.to_thread(self._build, name, spec, wasm)
            except ValueError as e:
                entry.error = str(e)
        if self.objects.get(name) is None or object_key(self.objects[name]) != entry.key:
            return  # changed or deleted while it loaded: the next pass sees the new one
        self._install(name, entry)

    def _install(self, name: str, entry: Entry) -> None:
        old = self.entries.get(name)
        if old is not None:  # status bookkeeping carries over; the counts do not
            entry.ready, entry.written, entry.written_at = old.ready, old.written, old.written_at
            entry.last_run_time = old.last_run_time
        self.entries[name] = entry
        if entry.policy is not None:
            try:
                self.service.put(entry.policy)
            except ValueError as e:
                entry.policy, entry.error = None, str(e)
        if entry.policy is None:
            if name in self.service.policies:
                self.service.remove(name)
            if old is None or old.error != entry.error:
                log.warning("policy %s not loaded: %s", name, entry.error)

    # -- the module's bytes and the sandbox -------------------------------------------------
    def _build(self, name: str, spec: Obj, wasm: bytes) -> LoadedPolicy:
        """Validate, compile, instantiate and check the ABI (in a worker thread);
        ValueError says why the module is refused. The same checks as `kubepd policy add`."""
        # Imported here: this module must import without wasmtime (see start_policies).
        from pdcore.adapters.wasm.host import PolicyLoadError, instantiate

        policy_spec = spec_from_object(name, spec, wasm)
        try:
            return LoadedPolicy(policy_spec, instantiate(self.host, policy_spec))
        except PolicyLoadError as e:
            raise ValueError(str(e)) from None

    # -- status --------------------------------------------------------------------------
    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_TICK_S)
            if not self.reporting():
                for entry in self.entries.values():  # whoever holds the role writes
                    entry.offset, entry.written = None, None
                continue
            for name, entry in list(self.entries.items()):
                obj = self.objects.get(name)
                if obj is None or object_key(obj) != entry.key:
                    continue
                try:
                    await self.write_status(name, obj, entry)
                except Exception:
                    log.exception("SchedulingPolicy %s status", name)

    async def write_status(self, name: str, obj: Obj, entry: Entry) -> None:
        now = time.time()
        # Here, not at load: every candidate loads, only the reporting process tells.
        if entry.policy is None and entry.error and not entry.warned and self.events:
            entry.warned = True
            self.events.warn(obj, "PolicyLoadFailed", f"{self._where()}{entry.error}")
        if entry.offset is None:
            self._take_over(obj, entry)
        p = entry.policy
        if p is not None and p.runs > entry.seen_runs:
            entry.seen_runs, entry.last_run_time = p.runs, convert.format_time(now)
        status = self.status_body(obj, entry, now)
        if status == entry.written:
            return
        if time.monotonic() - entry.written_at < self.status_min_interval_s:
            return
        try:
            await self.client.patch(
                kinds.SCHEDULING_POLICIES.path(self.namespace, name, "status"), {"status": status}
            )
        except NotFound:
            return  # deleted meanwhile
        except ApiError as e:
            log.info("SchedulingPolicy %s status not written: %s", name, e)
            return
        entry.written, entry.written_at = status, time.monotonic()
        self.status_writes += 1

    def status_body(self, obj: Obj, entry: Entry, now: float) -> Obj:
        """What to merge into the object's status."""
        return self.status_of(entry, now)

    def own_status(self, obj: Obj) -> Obj:
        """The part of status this process's figures continue from."""
        return obj.get("status") or {}

    def _take_over(self, obj: Obj, entry: Entry) -> None:
        """Continue from the figures the last holder wrote for this very module."""
        st = self.own_status(obj)
        p = entry.policy
        same = (
            p is not None
            and st.get("observedGeneration") == entry.generation
            and st.get("moduleDigest") == f"sha256:{entry.digest}"
        )
        if p is None or not same:
            entry.offset = (0, 0, 0)
            return
        entry.offset = (
            max(0, int(st.get("runs", 0)) - p.runs),
            max(0, int(st.get("proposalsAccepted", 0)) - p.accepted),
            max(0, int(st.get("proposalsRejected", 0)) - p.rejected),
        )
        for c in st.get("conditions") or []:
            if c.get("type") == "Ready" and not entry.ready[2]:
                entry.ready = (
                    c.get("status", ""),
                    c.get("reason", ""),
                    c.get("lastTransitionTime", ""),
                )

    def status_of(self, entry: Entry, now: float) -> Obj:
        p = entry.policy
        off = entry.offset or (0, 0, 0)
        if p is None:
            phase = PolicyPhase.FAILED if entry.error else PolicyPhase.PENDING
            runs, accepted, rejected = 0, 0, 0
            error = entry.error
        else:
            phase, error = p.phase, p.last_error
            runs, accepted, rejected = p.runs + off[0], p.accepted + off[1], p.rejected + off[2]
        ready, reason, message = self._ready(entry, phase, error)
        if entry.ready[:2] != (ready, reason) or not entry.ready[2]:
            entry.ready = (ready, reason, convert.format_time(now))
        status: Obj = {
            "phase": phase.value,
            "runs": runs,
            "proposalsAccepted": accepted,
            "proposalsRejected": rejected,
            "lastError": error[:MAX_ERROR_CHARS],
            "observedGeneration": entry.generation,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": message[:MAX_ERROR_CHARS],
                    "lastTransitionTime": entry.ready[2],
                    "observedGeneration": entry.generation,
                }
            ],
        }
        if entry.digest:
            status["moduleDigest"] = f"sha256:{entry.digest}"
        if entry.last_run_time:
            status["lastRunTime"] = entry.last_run_time
        return status

    @staticmethod
    def _ready(entry: Entry, phase: PolicyPhase, error: str) -> tuple[str, str, str]:
        """The Ready condition: status, reason, message."""
        p = entry.policy
        if p is None:
            if not entry.error:
                return "False", "Loading", "reading and compiling the module"
            reason = "ModuleUnavailable" if entry.retry or not entry.digest else "LoadFailed"
            return "False", reason, entry.error
        if phase == PolicyPhase.DISABLED:
            return "False", "Disabled", f"failureStrategy Disable stopped it after: {error}"
        if phase == PolicyPhase.FAILED:
            return "False", "RunFailed", f"failed, retried with backoff: {error}"
        if phase == PolicyPhase.RUNNING:
            return "True", "Running", f"runs every {p.interval_s:g}s"
        return "True", "Loaded", "loaded; waiting for its first run"


# The worst phase first: the sum over sidecars shows any store's trouble.
PHASE_ORDER = tuple(
    p.value
    for p in (
        PolicyPhase.FAILED,
        PolicyPhase.DISABLED,
        PolicyPhase.RUNNING,
        PolicyPhase.LOADED,
        PolicyPhase.PENDING,
    )
)


class StorePolicyResources(SchedulingPolicyResources):
    """`scope: store` objects in one sidecar: every sidecar loads them and runs each over
    the regions its own stores lead (with every store for context), and sends the
    proposals to the scheduler role's holder, which admits or refuses each. A failing
    module is handled by its failure strategy here only.

    Status: each sidecar writes its own figures under `status.stores.<pod>` (a merge
    patch touches only that key) and the top-level figures as the sum over all entries
    it sees, the worst phase first, so `kubectl get spol` shows any store's trouble."""

    scope = "store"

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        cluster: str,
        role: SchedulerRole,
        host: WasmHost,
        *,
        pod: str,
        local_stores: Callable[[], set[int]],
        propose: Proposer,
        view: ViewSource | None = None,
        events: EventRecorder | None = None,
        resync_s: float = RESYNC_S,
        status_min_interval_s: float = STATUS_MIN_INTERVAL_S,
    ) -> None:
        self.pod = pod
        self.local_stores = local_stores
        self.propose = propose
        self.view = view
        super().__init__(
            client,
            namespace,
            cluster,
            role,
            host,
            resync_s=resync_s,
            status_min_interval_s=status_min_interval_s,
            events=events,
        )

    def _service(self, role: SchedulerRole) -> PolicyService:
        return role.store_policies(
            local_stores=self.local_stores,
            propose=self.propose,
            view=self.view,
            on_failure=self._failed,
        )

    def start(self) -> None:
        self.service.start()  # its own service, not the role's: started and stopped here
        super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.service.stop()

    def reporting(self) -> bool:
        return bool(self.local_stores())  # a sidecar whose TiKV is not connected runs nothing

    def _where(self) -> str:
        return f"{self.pod} (stores {sorted(self.local_stores())}): "

    def own_status(self, obj: Obj) -> Obj:
        stores = (obj.get("status") or {}).get("stores") or {}
        return stores.get(self.pod) or {}

    def status_body(self, obj: Obj, entry: Entry, now: float) -> Obj:
        mine = self.status_of(entry, now)
        mine.pop("conditions", None)
        mine["storeIds"] = sorted(self.local_stores())
        entries: dict[str, Obj] = dict((obj.get("status") or {}).get("stores") or {})
        entries[self.pod] = mine
        # Figures another generation's runner left behind do not add up with this one's.
        current = [e for e in entries.values() if e.get("observedGeneration") == entry.generation]
        phases = [str(e.get("phase", "Pending")) for e in current]
        phase = next((p for p in PHASE_ORDER if p in phases), "Pending")
        errors = [
            f"{pod}: {e['lastError']}" for pod, e in sorted(entries.items()) if e.get("lastError")
        ]
        error = "; ".join(errors)[:MAX_ERROR_CHARS]
        ready, reason = ("True", phase) if phase in ("Running", "Loaded") else ("False", phase)
        if entry.ready[:2] != (ready, reason) or not entry.ready[2]:
            entry.ready = (ready, reason, convert.format_time(now))
        status: Obj = {
            "phase": phase,
            "runs": sum(int(e.get("runs", 0)) for e in current),
            "proposalsAccepted": sum(int(e.get("proposalsAccepted", 0)) for e in current),
            "proposalsRejected": sum(int(e.get("proposalsRejected", 0)) for e in current),
            "lastError": error,
            "observedGeneration": entry.generation,
            "stores": {self.pod: mine},
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": (
                        f"{len(current)} sidecar(s) run it over their own regions"
                        + (f"; {error}" if error else "")
                    )[:MAX_ERROR_CHARS],
                    "lastTransitionTime": entry.ready[2],
                    "observedGeneration": entry.generation,
                }
            ],
        }
        for key in ("moduleDigest", "lastRunTime"):
            if key in mine:
                status[key] = mine[key]
        return status


def start_store_policies(
    client: KubeClient,
    namespace: str,
    cluster: str,
    role: SchedulerRole,
    host: WasmHost | None,
    *,
    pod: str,
    local_stores: Callable[[], set[int]],
    propose: Proposer,
    view: ViewSource | None = None,
    events: EventRecorder | None = None,
) -> StorePolicyResources | None:
    """Follow and run the cluster's store-scoped SchedulingPolicy objects in a sidecar;
    None without a Wasm host."""
    if host is None:
        return None
    resources = StorePolicyResources(
        client,
        namespace,
        cluster,
        role,
        host,
        pod=pod,
        local_stores=local_stores,
        propose=propose,
        view=view,
        events=events,
    )
    resources.start()
    return resources


def start_policies(
    client: KubeClient,
    namespace: str,
    cluster: str,
    role: SchedulerRole,
    host: WasmHost | None,
    candidate: Callable[[], bool] | None = None,
    events: EventRecorder | None = None,
) -> SchedulingPolicyResources | None:
    """Follow the cluster's SchedulingPolicy objects into the role's policy service;
    None without a Wasm host."""
    if host is None or role.policies is None:
        return None
    resources = SchedulingPolicyResources(
        client, namespace, cluster, role, host, candidate, events=events
    )
    resources.start()
    return resources
