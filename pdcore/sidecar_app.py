"""SidecarServer: kubepd as the PD sidecar of one TiKV pod, on Kubernetes.

Durable state is in custom resources (KubeStore). Every sidecar competes for the
`<cluster>-pd-leader` Lease; the holder serves TSO, IDs and metadata writes and the
authoritative region view, and — while nobody else holds the `<cluster>-scheduler`
Lease — also schedules. The others serve their local TiKV as followers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.grpc.keyspace_service import KeyspaceService
from pdcore.adapters.grpc.meta_storage import MetaStorageService
from pdcore.adapters.grpc.request_guard import RequestGuard
from pdcore.adapters.grpc.server import ClientServer
from pdcore.adapters.http.api import build_app
from pdcore.adapters.http.client_cert import secure
from pdcore.adapters.http.forward import add_leader_forwarding
from pdcore.adapters.http.keyspace_api import add_keyspace_routes
from pdcore.adapters.http.metrics import Metrics
from pdcore.adapters.http.scheduling_api import add_scheduling_routes
from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.directory import SidecarDirectory
from pdcore.adapters.kube.etcd_store import KubeEtcdStore
from pdcore.adapters.kube.events import EventRecorder
from pdcore.adapters.kube.fence import SchedulerFence
from pdcore.adapters.kube.lease import LeaseRole
from pdcore.adapters.kube.roles import SCHEDULER, lease_name
from pdcore.adapters.kube.scheduler_parts import KubeSchedulerParts
from pdcore.adapters.kube.scheduling_policies import start_store_policies
from pdcore.adapters.kube.store import KubeStore
from pdcore.adapters.net import host_port, member_id_of
from pdcore.adapters.sidecar.etcd_proxy import EtcdProxy
from pdcore.adapters.sidecar.leader_link import LeaderLink, address_of, url_of
from pdcore.adapters.sidecar.proposals import LeaderStores, Proposer
from pdcore.adapters.sidecar.service import SidecarService
from pdcore.adapters.sidecar.steps import StepReceiver, StepRouter
from pdcore.adapters.sidecar.store_feed import StoreFeed, read_region_sizes
from pdcore.adapters.storage.local import LocalStore
from pdcore.adapters.tls import Security, dialer
from pdcore.adapters.wasm.optional import wasm_host
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import NotLeader, PdError
from pdcore.domain.region import Region
from pdcore.domain.store import Store, StoreState
from pdcore.proto import (
    keyspacepb_pb2_grpc,
    kubepdpb_pb2_grpc,
    meta_storagepb_pb2_grpc,
    pdpb_pb2,
    pdpb_pb2_grpc,
)
from pdcore.service.etcd import EtcdService
from pdcore.service.keyspaces import KeyspaceManager
from pdcore.service.node import Member, PdNode
from pdcore.service.rate_log import RateLimitedLog
from pdcore.service.region_sync import apply_synced
from pdcore.service.scheduler_role import SchedulerRole
from pdcore.service.streams import HeartbeatStreams

log = logging.getLogger("kubepd.sidecar")
SIZES_EVERY_S = 5.0  # sizes move slowly; a full list costs ~20 bytes a region
CAMPAIGN_GRACE = 2.0  # lease durations a restarted, unsynced sidecar waits before campaigning


@dataclass
class SidecarOptions:
    namespace: str
    cluster: str
    pod_name: str
    kubeconfig: str | None = None
    client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] | None = None
    status_addr: str = "127.0.0.1:2381"
    http_on_client_port: bool = True  # PD's HTTP API on the client URL too, as PD does
    data_dir: str | None = None  # region snapshot for warm restarts
    lease_duration_s: float = 5.0
    renew_period_s: float = 1.0
    tso_save_interval_ms: int = 3000
    security: Security = field(default_factory=Security)  # TLS / mTLS, also to other pods


class SidecarServer:
    def __init__(self, opts: SidecarOptions) -> None:
        self.opts = opts
        self.client = KubeClient.auto(opts.kubeconfig)
        self.store = KubeStore(self.client, opts.namespace, opts.cluster)
        self.etcd_store = KubeEtcdStore(self.client, opts.namespace, opts.cluster)
        self.etcd: EtcdService | None = None
        self.ready = False
        self._grpc: ClientServer | None = None
        self.started = False  # start() has finished and stop() has not begun
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_log = RateLimitedLog(log)  # a follower re-reading durable state
        self.client_address = ""
        self.watched_config: ClusterConfig | None = None
        self.synced_once = False  # the region cache has caught up with a pd-leader
        self._started_at = time.monotonic()

    def is_leader(self) -> bool:
        return self.ready and self.leader_lease.is_held()

    def may_lead(self) -> bool:
        """Campaign for pd-leader only with regions to serve: PD loads them from its
        storage, a sidecar has its cache. A restarted pod waits until it has synced,
        unless the cluster is new, or nobody it could sync from appeared within
        CAMPAIGN_GRACE leases (every pod restarted at once)."""
        if self.synced_once or not self.node.is_bootstrapped or len(self.node.tree):
            return True
        waited = time.monotonic() - self._started_at
        return waited >= CAMPAIGN_GRACE * self.opts.lease_duration_s

    def _caught_up(self) -> None:
        if not self.synced_once:
            log.info("region cache in sync", extra={"regions": len(self.node.tree)})
        self.synced_once = True

    async def start(self) -> None:
        o = self.opts
        sec = o.security
        dial = dialer(sec)
        self._grpc = ClientServer(
            o.client_urls[0],
            http_on_client_port=o.http_on_client_port,
            interceptors=[RequestGuard(sec.cert_allowed_cn)],
            security=sec,
        )
        self.client_address = await self._grpc.bind()
        scheme = "https" if sec.enabled else "http"
        url = (o.advertise_client_urls or [f"{scheme}://{self.client_address}"])[0]
        self.etcd_proxy = EtcdProxy(lambda: self._leader_address(url), dial)
        self._grpc.grpc.add_generic_rpc_handlers((self.etcd_proxy,))
        identity = f"{o.pod_name}@{url}"
        self.member = Member(o.pod_name, member_id_of(o.pod_name, url), (url,))
        self.leader_lease = LeaseRole(
            self.client,
            o.namespace,
            f"{o.cluster}-pd-leader",
            identity,
            o.lease_duration_s,
            o.renew_period_s,
            on_change=self._leader_changed,
        )
        self.sched_lease = LeaseRole(
            self.client,
            o.namespace,
            f"{o.cluster}-scheduler",
            identity,
            o.lease_duration_s,
            o.renew_period_s,
        )
        regions = LocalStore(o.data_dir) if o.data_dir else None
        self.node = PdNode(
            meta=self.store,
            region_storage=regions,
            clock=SystemClock(),
            member=self.member,
            is_leader=self.is_leader,
            tso_save_interval_ms=o.tso_save_interval_ms,
        )
        await self.node.start(serve_writes=False)
        self.keyspaces = KeyspaceManager(self.store, self.node.clock, self.is_leader)
        await self.keyspaces.load()
        self.link = LeaderLink(
            lambda: self.leader_lease.holder, lambda: self.node.cluster_id, own_url=url, dial=dial
        )
        # Operator steps: from the scheduler role's holder to the sidecar serving each
        # store, which admits them only from the current holder (the fence).
        self.directory = SidecarDirectory(self.client, o.namespace, o.cluster)
        self.local_streams = HeartbeatStreams(
            on_bind=lambda store_id: self.directory.announce(store_id, o.pod_name, url)
        )
        self.router = StepRouter(
            self.local_streams,
            url,
            self.directory.url_of,
            self._scheduler_term,
            lambda: self.node.cluster_id,
            dial=dial,
        )
        self.fence = SchedulerFence(self.client, o.namespace, lease_name(o.cluster, SCHEDULER))
        self.steps = StepReceiver(self.local_streams, self.fence, lambda: self.node.cluster_id)
        # One Wasm host for both scopes of SchedulingPolicy objects (the role closes it).
        self.wasm = wasm_host("SchedulingPolicy objects")
        self.role = SchedulerRole(
            self.node,
            self.router,
            self.node.clock,
            holds=lambda: self.is_leader() and self.sched_lease.is_held(),
            writes_metadata=self.is_leader,
            catalog=self.wasm,
        )
        self.scheduling = self.role.scheduling
        self.node.scheduling = self.scheduling
        self.service = SidecarService(
            self.node, self.link, self.is_leader, self.local_streams, o.pod_name
        )
        add = self._grpc.add
        add(pdpb_pb2_grpc.add_PDServicer_to_server, self.service)
        add(kubepdpb_pb2_grpc.add_SidecarServicer_to_server, self.steps)
        add(kubepdpb_pb2_grpc.add_LeaderServicer_to_server, StoreFeed(self.node, self.is_leader))
        add(
            meta_storagepb_pb2_grpc.add_MetaStorageServicer_to_server, MetaStorageService(self.node)
        )
        add(
            keyspacepb_pb2_grpc.add_KeyspaceServicer_to_server,
            KeyspaceService(
                self.keyspaces,
                lambda: self.node.cluster_id,
                lambda: self.node.started,
                leader=self.link.channel,
            ),
        )
        self.events = EventRecorder(self.client, o.namespace, "kubepd-sidecar", o.pod_name)
        self.parts = KubeSchedulerParts(
            self.client,
            o.namespace,
            o.cluster,
            self.role,
            self.directory,
            holder=identity,
            events=self.events,
            cluster_id=lambda: self.node.cluster_id,
            host=self.wasm,
            candidate=self.is_leader,
        )
        # Store-scoped policies' proposals, answered while this sidecar holds the role.
        add(kubepdpb_pb2_grpc.add_SchedulerServicer_to_server, self.parts.propose_service)
        app = build_app(self.node, Metrics(self.node))
        add_scheduling_routes(app, self.scheduling)
        add_keyspace_routes(app, self.keyspaces)
        if self._grpc.http_on_client_port:  # else (or with TLS) nowhere to forward to
            add_leader_forwarding(app, self.is_leader, self._leader_url)
        http_tls = secure(app, sec)
        if http_tls is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(http_tls.watch()))
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        shost, sport = host_port(o.status_addr)
        ssl_context = http_tls.context if http_tls is not None else None
        await web.TCPSite(self._http, shost, sport, ssl_context=ssl_context).start()
        await self._grpc.start(self.can_serve, self._http.server)
        self.leader_lease.start(may_acquire=self.may_lead)
        self.sched_lease.start(may_acquire=self.is_leader)
        self.role.start()
        self.directory.follow()
        self.parts.start()
        self.proposer = Proposer(
            lambda: self.sched_lease.holder, lambda: self.node.cluster_id, dial=dial
        )
        self.leader_stores = LeaderStores(
            self.node,
            self.is_leader,
            lambda: self.leader_lease.holder,
            lambda: self.node.cluster_id,
            dial=dial,
        )
        self.store_policies = start_store_policies(
            self.client,
            o.namespace,
            o.cluster,
            self.role,
            self.wasm,
            pod=o.pod_name,
            # The stores whose TiKV heartbeats here: their regions are this sidecar's.
            local_stores=self.service.local_stores,
            propose=self.proposer,
            view=self.leader_stores,
            events=self.events,
        )
        loop = asyncio.get_running_loop()
        member_pb = pdpb_pb2.Member(
            name=self.member.name,
            member_id=self.member.member_id,
            client_urls=list(self.member.client_urls),
        )
        self._tasks += [
            loop.create_task(
                self.link.sync_regions(
                    self._apply_synced, member_pb, lambda: not self.is_leader(), self._caught_up
                )
            ),
            loop.create_task(self._refresh_follower()),
            loop.create_task(self._follow_sizes()),
            # the pd-leader reports on each PlacementRule whether it was applied
            loop.create_task(self.parts.follow_rules(self.store, report=self.is_leader)),
            loop.create_task(self._drive_store_states()),
            loop.create_task(self._follow_config()),
            loop.create_task(self._follow_keyspaces()),
        ]
        self.started = True
        log.info("sidecar serving", extra={"client": self.client_address, "pod": o.pod_name})

    def can_serve(self) -> bool:
        """What gRPC health reports: serving as pd-leader, or following a reachable one."""
        return self.started and (self.is_leader() or self.link.in_sync)

    def _leader_url(self) -> str:
        """The pd-leader's client URL for forwarded HTTP writes ("" if none or us)."""
        url = url_of(self.leader_lease.holder)
        return "" if url in self.member.client_urls else url

    def _scheduler_term(self) -> tuple[str, int] | None:
        """Our scheduler term while we hold the role (steps are signed with it)."""
        lease = self.sched_lease
        return (lease.identity, lease.token) if lease.is_held() else None

    def _leader_address(self, own_url: str) -> str:
        """Where a follower relays etcd calls: the pd-leader, never ourselves."""
        url = url_of(self.leader_lease.holder)
        return address_of(url) if url and url != own_url else ""

    def _leader_changed(self, held: bool) -> None:
        if held:
            asyncio.get_running_loop().create_task(self._take_over())
        else:
            self.ready = False
            self.node.step_down()
            self.etcd_proxy.serve_locally(None)
            if self.etcd is not None:
                asyncio.get_running_loop().create_task(self.etcd.stop())
                self.etcd = None
            log.warning("lost the pd-leader lease; serving as a follower")

    async def _take_over(self) -> None:
        try:
            await self.node.become_leader()
            self._reapply_watched()
            self.ready = self.leader_lease.is_held()
            # Off the path to serving TSO: keyspace ids are safe meanwhile (their mark
            # moves by compare-and-swap), and DEFAULT usually exists already.
            self._tasks.append(asyncio.get_running_loop().create_task(self._lead_keyspaces()))
            log.info("serving as pd-leader", extra={"regions": len(self.node.tree)})
        except Exception:
            log.exception("could not take over as pd-leader")
            await self.leader_lease.release()
            return
        await self._start_etcd()

    async def _start_etcd(self) -> None:
        """The etcd API's keys, revisions and leases continue from the ConfigMaps."""
        etcd = EtcdService(self.node, self.etcd_store, self.node.clock)
        try:
            await etcd.start()
        except NotLeader:
            log.info("lost the pd-leader lease while loading the etcd API's data")
            return
        except Exception:  # PD itself keeps serving; etcd calls get UNAVAILABLE
            log.exception("could not load the etcd API's data")
            return
        if not self.is_leader():  # the lease went while we loaded: serve nothing stale
            await etcd.stop()
            return
        self.etcd = etcd
        self.etcd_proxy.serve_locally(etcd)

    def _apply_synced(self, region: Region) -> None:
        apply_synced(self.node.tree, region, self.scheduling)

    async def _follow_sizes(self) -> None:
        """A follower keeps the regions' sizes from the pd-leader (the region sync has
        none), so that it schedules on real sizes the moment it takes over."""
        while True:
            await asyncio.sleep(SIZES_EVERY_S)
            if not self.is_leader() and self.link.in_sync:
                await read_region_sizes(self.link.channel(), self.node.cluster_id, self.node.tree)

    async def _drive_store_states(self) -> None:
        """TiKVStore spec.desiredState is how the operator asks for a drain (Offline) or
        calls it off (Up). The pd-leader carries it out, or says in status.drain why not
        (e.g. too few stores would be left for max-replicas): never forced. It also
        marks status.down on stores silent for longer than max-store-down-time."""
        while True:
            await asyncio.sleep(1.0)
            if not self.is_leader():
                continue
            max_down = self.node.config.schedule.max_store_down_time_s
            now = self.node.clock.now_s()
            for sid, obj in list(self.directory.objects.items()):
                store = self.node.get_store(sid)
                if store is None or store.is_tombstone:
                    continue
                status = obj.get("status") or {}
                down = store.last_heartbeat_ns > 0 and store.is_down(now, max_down)
                if bool(status.get("down")) != down:
                    await self.directory.report(sid, {"down": down})
                drain = await self._drive_drain(sid, store, (obj.get("spec") or {}))
                if drain is not None and status.get("drain") != drain:
                    await self.directory.report(sid, {"drain": drain})

    async def _drive_drain(
        self, sid: int, store: Store, spec: dict[str, Any]
    ) -> dict[str, str] | None:
        want = spec.get("desiredState")
        if want == "Offline" and store.is_up:
            target, done = StoreState.OFFLINE, "regions are moving off the store"
        elif want == "Up" and store.is_offline:
            target, done = StoreState.UP, "the drain was called off"
        else:
            return None
        try:
            await self.node.set_store_state(sid, target)
        except PdError as e:
            return {"state": "Blocked", "message": str(e)}
        return {
            "state": "Draining" if target == StoreState.OFFLINE else "Cancelled",
            "message": done,
        }

    async def _follow_config(self) -> None:
        """The TiKVCluster's schedule and replication config, live."""
        async for config in self.store.watch_config():
            self.watched_config = self.node.config = config
            log.info("cluster config from the TiKVCluster is in force")

    async def _lead_keyspaces(self) -> None:
        try:
            await self.keyspaces.start_leading()
        except Exception:
            log.exception("could not load keyspaces as pd-leader (retried at the next write)")

    async def _follow_keyspaces(self) -> None:
        """Keyspace objects, live: every member answers keyspace reads itself."""
        async for keyspaces in self.store.watch_keyspaces():
            self.keyspaces.apply(keyspaces)

    def _reapply_watched(self) -> None:
        """Reloading durable state must not undo the TiKVCluster's config."""
        if self.watched_config is not None:
            self.node.config = self.watched_config

    async def _refresh_follower(self) -> None:
        """Followers re-read durable state (bootstrap, stores) now and then."""
        while True:
            await asyncio.sleep(2.0)
            if not self.is_leader():
                try:
                    await self.node.load_durable(serve_writes=False)
                    self._reapply_watched()
                except Exception as e:
                    # Every 2 s while the API server is away: one line an interval.
                    self._refresh_log.warning(
                        "follower-refresh",
                        "re-reading durable state failed: %r",
                        e,
                        exc_info=True,
                    )

    async def stop(self) -> None:
        self.started = False
        if self._grpc is not None:
            await self._grpc.health.shutdown()  # NOT_SERVING before anything stops
        for t in self._tasks:
            t.cancel()
        await self.parts.stop()
        if self.store_policies is not None:
            await self.store_policies.stop()
        await self.proposer.close()
        await self.leader_stores.close()
        await self.role.stop()
        await self.directory.stop()
        await self.router.close()
        if self.etcd is not None:
            await self.etcd.stop()
        await self.etcd_proxy.close()
        await self.leader_lease.stop(release=True)
        await self.sched_lease.stop(release=True)
        if self._grpc is not None:
            await self._grpc.stop(0.5)
        if self._http is not None:
            await self._http.cleanup()
        await self.node.stop()
        await self.link.close()
        await self.client.close()


def default_data_dir(pod: str) -> str:
    return str(Path("data") / pod)
