"""PdServer: one embedded kubepd process — PD node, gRPC and HTTP servers, storage.

The composition root for `kubepd serve`, the simulator and the demo. Everything is
passed in explicitly through `ServerOptions`; nothing is read from globals.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.grpc.etcd import add_etcd_services
from pdcore.adapters.grpc.keyspace_service import KeyspaceService
from pdcore.adapters.grpc.meta_storage import MetaStorageService
from pdcore.adapters.grpc.pd_service import PdService
from pdcore.adapters.grpc.request_guard import RequestGuard
from pdcore.adapters.grpc.server import ClientServer
from pdcore.adapters.http.access import ApiAccess, guard_writes
from pdcore.adapters.http.api import build_app
from pdcore.adapters.http.client_cert import secure
from pdcore.adapters.http.keyspace_api import add_keyspace_routes
from pdcore.adapters.http.metrics import Metrics
from pdcore.adapters.http.scheduling_api import add_scheduling_routes
from pdcore.adapters.inproc import InProcessServer
from pdcore.adapters.net import DEFAULT_MAX_MESSAGE_BYTES, host_port, member_id_of
from pdcore.adapters.storage.local import LocalStore
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.adapters.tls import HttpTls, Security
from pdcore.adapters.wasm.optional import wasm_host
from pdcore.domain.config import ClusterConfig
from pdcore.ports import Clock, EtcdStore, MetaStore, RegionStorage, RuleStore
from pdcore.proto import keyspacepb_pb2_grpc, meta_storagepb_pb2_grpc, pdpb_pb2_grpc
from pdcore.scheduling.rules import default_rules
from pdcore.service.etcd import EtcdService
from pdcore.service.keyspaces import KeyspaceManager
from pdcore.service.node import Member, PdNode
from pdcore.service.placement_rules import PlacementRules
from pdcore.service.policies import PolicyService
from pdcore.service.scheduler_role import SchedulerRole

if TYPE_CHECKING:
    from pdcore.adapters.wasm.host import WasmHost

log = logging.getLogger("kubepd.server")


@dataclass
class ServerOptions:
    name: str = "pd"
    data_dir: str | Path | None = None  # None: in-memory store (tests, simulator)
    client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] | None = None
    status_addr: str = "127.0.0.1:2381"
    clock: Clock = field(default_factory=SystemClock)
    config: ClusterConfig = field(default_factory=ClusterConfig)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    tso_save_interval_ms: int = 3000
    enable_scheduling: bool = True
    # False: no sockets; clients reach `PdServer.inproc` (the simulator on virtual time).
    listen: bool = True
    # Seeds every random choice PD makes (cluster id, scheduling); None: from the OS.
    seed: int | None = None
    schedule_tick_s: float | None = None  # None: the scheduling service's default
    interceptors: list[Any] = field(default_factory=list)  # grpc.aio.ServerInterceptor
    http_on_client_port: bool = True  # PD's HTTP API on the client URL too, as PD does
    force_new_cluster: bool = False  # move an existing database aside and start anew
    security: Security = field(default_factory=Security)  # TLS / mTLS (off by default)
    api_access: ApiAccess = field(default_factory=ApiAccess)  # HTTP writes: open by default


class PdServer:
    def __init__(self, options: ServerOptions, memory: MemoryStore | None = None) -> None:
        # `memory`: the in-memory store to use when there is no data dir (kept across a
        # simulated restart).
        self.options = options
        self.store: MetaStore
        self.region_storage: RegionStorage
        self.etcd_store: EtcdStore
        self.rule_store: RuleStore
        if options.data_dir is None:
            mem = memory or MemoryStore()
            self.store, self.region_storage, self.etcd_store, self.rule_store = (mem,) * 4
        else:
            local = LocalStore(options.data_dir, force_new_cluster=options.force_new_cluster)
            self.store, self.region_storage, self.etcd_store, self.rule_store = (local,) * 4
        self.etcd: EtcdService | None = None
        self._grpc: ClientServer | None = None
        self.inproc: InProcessServer | None = None
        self.serving = False  # what gRPC health reports
        self._http: web.AppRunner | None = None
        self.client_address = ""
        self.status_address = ""
        self.node: PdNode | None = None
        self.pd_service: PdService | None = None
        self.metrics: Metrics | None = None
        self.scheduler: SchedulerRole | None = None
        self.rules: PlacementRules | None = None  # written over PD's API
        self.wasm_host: WasmHost | None = None
        self._http_tls: HttpTls | None = None
        self._tls_watch: asyncio.Task[None] | None = None

    @property
    def policies(self) -> PolicyService | None:
        return self.scheduler.policies if self.scheduler is not None else None

    def _rng(self, stream: int) -> random.Random | None:
        seed = self.options.seed
        return None if seed is None else random.Random(seed * 1_000_003 + stream)

    async def _listen_grpc(self) -> None:
        opts = self.options
        self._grpc = ClientServer(
            opts.client_urls[0],
            max_message_bytes=opts.max_message_bytes,
            http_on_client_port=opts.http_on_client_port,
            interceptors=[RequestGuard(opts.security.cert_allowed_cn), *opts.interceptors],
            security=opts.security,
        )
        self.client_address = await self._grpc.bind()

    def _add(self, add: Any, servicer: Any) -> None:
        if self._grpc is not None:
            self._grpc.add(add, servicer)
        else:
            add(servicer, self.inproc)

    async def start(self) -> None:
        opts = self.options
        if opts.listen:
            await self._listen_grpc()
            _, port = host_port(opts.client_urls[0])
        else:
            self.inproc, port = InProcessServer(), 0
            self.client_address = "inproc:" + opts.name
        scheme = "https" if opts.security.enabled else "http"
        advertise = opts.advertise_client_urls or [f"{scheme}://{self.client_address}"]
        if opts.advertise_client_urls and port == 0:
            advertise = [f"{scheme}://{self.client_address}"]
        member = Member(
            name=opts.name,
            member_id=member_id_of(opts.name, advertise[0]),
            client_urls=tuple(advertise),
        )
        node = PdNode(
            meta=self.store,
            region_storage=self.region_storage,
            clock=opts.clock,
            member=member,
            config=opts.config,
            tso_save_interval_ms=opts.tso_save_interval_ms,
            rng=self._rng(0),
        )
        self.node = node
        await node.start()
        keyspaces = KeyspaceManager(self.store, opts.clock, lambda: True)  # one member: leader
        await keyspaces.start_leading()
        if opts.enable_scheduling:
            self.scheduler = self._start_scheduling(node)
        self.pd_service = pd_service = PdService(node)
        self._add(pdpb_pb2_grpc.add_PDServicer_to_server, pd_service)
        if self._grpc is not None:  # Tso on bytes on a real server
            self._grpc.replace_method("pdpb.PD", "Tso", pd_service.tso_fast_handler())
        self._add(
            meta_storagepb_pb2_grpc.add_MetaStorageServicer_to_server, MetaStorageService(node)
        )
        self._add(
            keyspacepb_pb2_grpc.add_KeyspaceServicer_to_server,
            KeyspaceService(keyspaces, lambda: node.cluster_id, lambda: node.started),
        )
        self.etcd = EtcdService(node, self.etcd_store, opts.clock)
        await self.etcd.start()
        add_etcd_services(self.etcd, self._add)
        self.metrics = Metrics(node)
        app = build_app(node, self.metrics)
        add_keyspace_routes(app, keyspaces)
        if self.scheduler is not None:
            await self._load_rules(self.scheduler)
            self._attach_scheduling_routes(app, self.scheduler)
        if self._grpc is None:
            log.info("kubepd serving in process", extra={"cluster_id": node.cluster_id})
            return
        self._http_tls = secure(app, opts.security)
        ssl_context = self._http_tls.context if self._http_tls else None
        if self._http_tls is not None:
            self._tls_watch = asyncio.get_running_loop().create_task(self._http_tls.watch())
        if opts.api_access.restricted:
            app.middlewares.append(guard_writes(opts.api_access))
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        shost, sport = host_port(opts.status_addr)
        site = web.TCPSite(self._http, shost, sport, ssl_context=ssl_context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        real_port = sockets[0].getsockname()[1] if sockets else sport
        self.status_address = f"{shost}:{real_port}"
        await self._grpc.start(lambda: self.serving, self._http.server)
        self.serving = True
        await self._grpc.health.refresh()
        log.info(
            "kubepd serving",
            extra={
                "client": self.client_address,
                "status": self.status_address,
                "cluster_id": node.cluster_id,
            },
        )

    def _start_scheduling(self, node: PdNode) -> SchedulerRole:
        """The scheduler role on the embedded server: always held (one member)."""
        self.wasm_host = wasm_host("Wasm policies")
        extra: dict[str, Any] = {}
        if self.options.schedule_tick_s is not None:
            extra["tick_s"] = self.options.schedule_tick_s
        role = SchedulerRole(
            node, node.streams, node.clock, catalog=self.wasm_host, rng=self._rng(1), **extra
        )
        node.scheduling = role.scheduling
        role.start()
        return role

    async def _load_rules(self, role: SchedulerRole) -> None:
        """The rules written over PD's API, in force from start (no PlacementRule
        objects here); PD's default rule from the replication config until then."""
        self.rules = PlacementRules(
            self.rule_store,
            default=lambda: default_rules(role.scheduling.coordinator.view.config.replication),
            apply=role.scheduling.set_rules,
        )
        await self.rules.load()

    def _attach_scheduling_routes(self, app: web.Application, role: SchedulerRole) -> None:
        add_scheduling_routes(app, role.scheduling, self.rules)
        if role.policies is not None and self.wasm_host is not None:
            from pdcore.adapters.http.policy_api import add_policy_routes

            add_policy_routes(app, role.policies, self.wasm_host)

    async def stop(self, grace_s: float = 1.0, crash: bool = False) -> None:
        """Stop every part; `crash=True` skips the final region flush, so what was not
        yet saved is lost as after kill -9 (the store itself is closed either way)."""
        self.serving = False
        if self._grpc is not None:
            await self._grpc.health.shutdown()  # NOT_SERVING before anything stops
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self.scheduler is not None:
            await self.scheduler.stop()  # its policies and the Wasm host with it
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
        if self.inproc is not None:
            self.inproc.stop()
        if self._http is not None:
            await self._http.cleanup()
        if self.etcd is not None:
            await self.etcd.stop()
        if self.node is not None:
            await self.node.stop(flush=not crash)
        await self.store.close()
