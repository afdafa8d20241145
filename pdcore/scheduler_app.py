"""SchedulerHost: the scheduler role outside the pd-leader (ARCHITECTURE §2).

The operator runs one per TiKVCluster (a kopf daemon), and `kubepd scheduler` runs one
standalone. It asks for the `<cluster>-scheduler` Lease as the preferred holder (the
pd-leader hands the role over and takes it back when this one is gone), keeps a region
view synced from the pd-leader, reads stores with their heartbeat figures from the
pd-leader and rules and config from the custom resources, runs the scheduling core, and
pushes every operator step to the sidecar serving the region leader's store, signed
with its term. Peer ids come from the pd-leader. It serves nothing to TiKV and writes
no metadata, so nothing it does can slow TSO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from pdcore.adapters import codec
from pdcore.adapters.clock import SystemClock
from pdcore.adapters.grpc.request_guard import RequestGuard
from pdcore.adapters.http.client_cert import secure
from pdcore.adapters.http.scheduling_api import add_scheduling_routes
from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.directory import SidecarDirectory
from pdcore.adapters.kube.events import EventRecorder
from pdcore.adapters.kube.lease import LeaseRole
from pdcore.adapters.kube.roles import PD_LEADER, lease_name, scheduler_preferred
from pdcore.adapters.kube.scheduler_parts import KubeSchedulerParts
from pdcore.adapters.kube.store import KubeStore
from pdcore.adapters.net import host_port
from pdcore.adapters.sidecar.leader_link import LeaderLink, address_of, url_of
from pdcore.adapters.sidecar.steps import StepRouter
from pdcore.adapters.sidecar.store_feed import read_region_sizes
from pdcore.adapters.tls import Security, add_grpc_port, dialer
from pdcore.adapters.wasm.optional import wasm_host
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import NotLeader
from pdcore.domain.region import Region
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import Store
from pdcore.proto import kubepdpb_pb2, kubepdpb_pb2_grpc, pdpb_pb2
from pdcore.service.region_sync import apply_synced
from pdcore.service.scheduler_role import SchedulerRole
from pdcore.service.streams import HeartbeatStreams

log = logging.getLogger("kubepd.scheduler")
STORES_EVERY_S = 1.0
SIZES_EVERY_S = 5.0  # sizes move slowly; a full list costs ~20 bytes a region


@dataclass
class RemoteCluster:
    """The scheduling core's view of the cluster, fed from the pd-leader."""

    link: LeaderLink
    tree: RegionTree = field(default_factory=RegionTree)
    config: ClusterConfig = field(default_factory=ClusterConfig)
    store_map: dict[int, Store] = field(default_factory=dict)
    cluster_id: int = 0

    def stores(self) -> list[Store]:
        return list(self.store_map.values())

    def get_store(self, store_id: int) -> Store | None:
        return self.store_map.get(store_id)

    async def alloc_id(self, count: int = 1) -> int:
        resp = await self.link.forward(
            "AllocID",
            pdpb_pb2.AllocIDRequest(
                header=pdpb_pb2.RequestHeader(cluster_id=self.cluster_id), count=count
            ),
        )
        if resp.header.HasField("error"):
            raise NotLeader(resp.header.error.message)
        return int(resp.id)

    async def bury_empty_offline_stores(self) -> list[int]:
        return []  # store metadata is the pd-leader's to write


@dataclass
class SchedulerOptions:
    namespace: str
    cluster: str
    identity: str
    kubeconfig: str | None = None
    lease_duration_s: float = 5.0
    renew_period_s: float = 1.0
    status_addr: str | None = None  # HOST:PORT for /health and the scheduling API
    status_interval_s: float = 10.0  # TiKVCluster status.scheduling at most this often
    # HOST:PORT for kubepdpb.Scheduler (store-scoped policies' proposals); its URL then
    # joins the Lease identity, `<identity>@http://HOST:PORT`, so sidecars can find it.
    grpc_addr: str | None = None
    advertise_host: str | None = None  # in that URL instead of grpc_addr's host (a pod IP)
    # TLS / mTLS for both servers, and the certificate it presents to the sidecars.
    security: Security = field(default_factory=Security)


class SchedulerHost:
    def __init__(self, opts: SchedulerOptions, client: KubeClient | None = None) -> None:
        self.opts = opts
        self._own_client = client is None
        self.client = client or KubeClient.auto(opts.kubeconfig)
        self.store = KubeStore(self.client, opts.namespace, opts.cluster)
        self._tasks: list[asyncio.Task[None]] = []
        self._http: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.synced = False
        self.identity = opts.identity  # with its URL once the gRPC server is bound
        self._dial = dialer(opts.security)

    async def start(self) -> None:
        o = self.opts
        if o.grpc_addr:
            sec = o.security
            self._grpc = grpc.aio.server(interceptors=[RequestGuard(sec.cert_allowed_cn)])
            host, port = host_port(o.grpc_addr)
            bound = add_grpc_port(self._grpc, f"{host}:{port}", sec)
            if not bound:
                raise OSError(f"cannot listen on {o.grpc_addr}")
            scheme = "https" if sec.enabled else "http"
            self.identity = f"{o.identity}@{scheme}://{o.advertise_host or host}:{bound}"
        state = await self.store.load()
        # Only watch the pd-leader Lease: never a candidate for it.
        self.leader_watch = LeaseRole(
            self.client,
            o.namespace,
            lease_name(o.cluster, PD_LEADER),
            self.identity,
            o.lease_duration_s,
            o.renew_period_s,
        )
        self.leader_watch.start(may_acquire=lambda: False)
        self.link = LeaderLink(
            lambda: self.leader_watch.holder, lambda: self.view.cluster_id, dial=self._dial
        )
        self.view = RemoteCluster(
            self.link, cluster_id=state.cluster_id, config=state.config or ClusterConfig()
        )
        self.view.store_map = dict(state.stores)
        self.directory = SidecarDirectory(self.client, o.namespace, o.cluster)
        self.directory.follow()
        self.lease = scheduler_preferred(
            self.client,
            o.namespace,
            o.cluster,
            self.identity,
            lease_duration_s=o.lease_duration_s,
            renew_period_s=o.renew_period_s,
        )
        self.router = StepRouter(
            HeartbeatStreams(),  # no TiKV of its own: every step goes to a sidecar
            "",
            self.directory.url_of,
            lambda: (self.identity, self.lease.token) if self.lease.is_held() else None,
            lambda: self.view.cluster_id,
            dial=self._dial,
        )
        wasm = wasm_host("SchedulingPolicy objects")
        self.role = SchedulerRole(
            self.view,
            self.router,
            SystemClock(),
            holds=lambda: self.synced and self.lease.is_held(),
            writes_metadata=lambda: False,  # store metadata is the pd-leader's to write
            catalog=wasm,
        )
        self.scheduling = self.role.scheduling
        self.role.start()
        self.events = EventRecorder(self.client, o.namespace, "kubepd-scheduler", o.identity)
        self.parts = KubeSchedulerParts(
            self.client,
            o.namespace,
            o.cluster,
            self.role,
            self.directory,
            holder=self.identity,
            events=self.events,
            cluster_id=lambda: self.view.cluster_id,
            host=wasm,
            status_interval_s=o.status_interval_s,
        )
        self.parts.start()
        if self._grpc is not None:
            kubepdpb_pb2_grpc.add_SchedulerServicer_to_server(
                self.parts.propose_service, self._grpc
            )
            await self._grpc.start()
        if o.status_addr:
            await self._serve_status(o.status_addr)
        member = pdpb_pb2.Member(name=o.identity)
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(
                self.link.sync_regions(self._apply, member, lambda: True, self._caught_up)
            ),
            loop.create_task(self._follow_stores()),
            loop.create_task(self.parts.follow_rules(self.store, report=None)),
            loop.create_task(self._follow_config()),
        ]
        log.info("scheduler host started", extra={"cluster": o.cluster, "identity": self.identity})

    async def _serve_status(self, addr: str) -> None:
        """/health, and the scheduling API (schedulers, operators, diagnostics)."""

        async def health(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    "scheduling": self.scheduling.active(),
                    "synced": self.synced,
                    "regions": len(self.view.tree),
                    "stores": len(self.view.store_map),
                    "steps": {
                        "delivered": self.router.delivered,
                        "refused": self.router.refused,
                        "failed": self.router.failed,
                        "unroutable": self.router.unroutable,
                    },
                }
            )

        app = web.Application()
        app.router.add_get("/health", health)
        add_scheduling_routes(app, self.scheduling)
        http_tls = secure(app, self.opts.security)
        if http_tls is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(http_tls.watch()))
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        host, port = host_port(addr)
        ssl_context = http_tls.context if http_tls is not None else None
        await web.TCPSite(self._http, host, port, ssl_context=ssl_context).start()

    def _apply(self, region: Region) -> None:
        applied = apply_synced(self.view.tree, region, self.scheduling)
        if applied is not None and self.synced:
            self.scheduling.on_region_heartbeat(*applied)

    def _caught_up(self) -> None:
        if not self.synced:
            log.info("region view in sync", extra={"regions": len(self.view.tree)})
        self.synced = True

    async def _follow_stores(self) -> None:
        """Stores with their heartbeat figures, from the pd-leader, every second."""
        channel: grpc.aio.Channel | None = None
        address = ""
        sizes_at = -SIZES_EVERY_S
        try:
            while True:
                await asyncio.sleep(STORES_EVERY_S)
                if not self.view.cluster_id:  # started before the cluster bootstrapped
                    with contextlib.suppress(Exception):
                        self.view.cluster_id = (await self.store.load()).cluster_id
                    continue
                target = address_of(url_of(self.leader_watch.holder))
                if not target:
                    continue
                if target != address or channel is None:
                    if channel is not None:
                        await channel.close(None)
                    address, channel = target, self._dial(target)
                try:
                    resp = await kubepdpb_pb2_grpc.LeaderStub(channel).GetStores(
                        kubepdpb_pb2.GetStoresRequest(cluster_id=self.view.cluster_id),
                        timeout=2.0,
                    )
                except grpc.aio.AioRpcError as e:
                    log.info("stores not read from %s: %s", address, e.details())
                    continue
                stores = (codec.store_info_from_pb(s) for s in resp.stores)
                self.view.store_map = {s.id: s for s in stores}
                if time.monotonic() - sizes_at >= SIZES_EVERY_S:
                    sizes_at = time.monotonic()
                    await read_region_sizes(channel, self.view.cluster_id, self.view.tree)
        finally:
            if channel is not None:
                await channel.close(None)

    async def _follow_config(self) -> None:
        async for config in self.store.watch_config():
            self.view.config = config

    def is_scheduling(self) -> bool:
        return self.scheduling.active()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.parts.stop()
        await self.role.stop()
        await self.lease.stop(release=True)
        await self.leader_watch.stop(release=False)
        await self.directory.stop()
        await self.router.close()
        await self.link.close()
        if self._http is not None:
            await self._http.cleanup()
        if self._grpc is not None:
            await self._grpc.stop(0.5)
        if self._own_client:
            await self.client.close()
