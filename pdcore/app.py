"""PdServer: one embedded kubepd process — PD node, gRPC and HTTP servers, storage.

The composition root for `kubepd serve`, the simulator and the demo. Everything is
passed in explicitly through `ServerOptions`; nothing is read from globals.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from pdcore.adapters.clock import SystemClock
from pdcore.adapters.grpc.meta_storage import MetaStorageService
from pdcore.adapters.grpc.pd_service import PdService
from pdcore.adapters.grpc.request_guard import RequestGuard
from pdcore.adapters.http.access import ApiAccess, guard_writes
from pdcore.adapters.http.api import build_app
from pdcore.adapters.http.client_cert import secure
from pdcore.adapters.http.metrics import Metrics
from pdcore.adapters.net import DEFAULT_MAX_MESSAGE_BYTES, host_port, member_id_of
from pdcore.adapters.storage.local import LocalStore
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.adapters.tls import HttpTls, Security, add_grpc_port
from pdcore.domain.config import ClusterConfig
from pdcore.ports import Clock, MetaStore, RegionStorage
from pdcore.proto import meta_storagepb_pb2_grpc, pdpb_pb2_grpc
from pdcore.service.node import Member, PdNode

log = logging.getLogger("kubepd.server")


@dataclass
class ServerOptions:
    name: str = "pd"
    data_dir: str | Path | None = None  # None: in-memory store (tests, simulator)
    client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] | None = None
    status_addr: str = "127.0.0.1:2381"
    clock: Clock = field(default_factory=SystemClock)
    sched_clock: Clock | None = None
    config: ClusterConfig = field(default_factory=ClusterConfig)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    tso_save_interval_ms: int = 3000
    enable_scheduling: bool = True
    force_new_cluster: bool = False  # move an existing database aside and start anew
    security: Security = field(default_factory=Security)  # TLS / mTLS (off by default)
    api_access: ApiAccess = field(default_factory=ApiAccess)  # HTTP writes: open by default


class PdServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.store: MetaStore
        self.region_storage: RegionStorage
        if options.data_dir is None:
            mem = MemoryStore()
            self.store, self.region_storage = mem, mem
        else:
            local = LocalStore(options.data_dir, force_new_cluster=options.force_new_cluster)
            self.store, self.region_storage = local, local
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self.client_address = ""
        self.status_address = ""
        self.node: PdNode | None = None
        self.metrics: Metrics | None = None
        self.policies: Any = None
        self.wasm_host: Any = None
        self._http_tls: HttpTls | None = None
        self._tls_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        opts = self.options
        host, port = host_port(opts.client_urls[0])
        self._grpc = grpc.aio.server(
            interceptors=[RequestGuard(opts.security.cert_allowed_cn)],
            options=[
                ("grpc.max_receive_message_length", opts.max_message_bytes),
                ("grpc.max_send_message_length", opts.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        sec = opts.security
        bound = add_grpc_port(self._grpc, f"{host}:{port}", sec)
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{port} (in use, or not a local address)")
        self.client_address = f"{host}:{bound}"
        scheme = "https" if sec.enabled else "http"
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
            sched_clock=opts.sched_clock or opts.clock,
            member=member,
            config=opts.config,
            tso_save_interval_ms=opts.tso_save_interval_ms,
        )
        self.node = node
        await node.start()
        if opts.enable_scheduling:
            self._start_scheduling(node)
        pdpb_pb2_grpc.add_PDServicer_to_server(PdService(node), self._grpc)
        meta_storagepb_pb2_grpc.add_MetaStorageServicer_to_server(
            MetaStorageService(node), self._grpc
        )
        self.metrics = Metrics(node)
        app = build_app(node, self.metrics)
        self._attach_scheduling_routes(app, node)
        self._http_tls = secure(app, sec)
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
        await self._grpc.start()
        log.info(
            "kubepd serving",
            extra={
                "client": self.client_address,
                "status": self.status_address,
                "cluster_id": node.cluster_id,
            },
        )

    def _start_scheduling(self, node: PdNode) -> None:
        try:
            module = importlib.import_module("pdcore.service.scheduling")
        except ImportError:  # the engine is optional until it is built
            log.warning("scheduling engine not available; serving without scheduling")
            return
        service = module.SchedulingService(node, node.streams, node.sched_clock, node.config)
        node.scheduling = service
        service.start()

    def _attach_scheduling_routes(self, app: web.Application, node: PdNode) -> None:
        if node.scheduling is None:
            return
        routes = importlib.import_module("pdcore.adapters.http.scheduling_api")
        routes.add_scheduling_routes(app, node.scheduling)
        try:
            from pdcore.adapters.http.policy_api import add_policy_routes
            from pdcore.adapters.wasm.host import WasmHost
            from pdcore.service.policies import PolicyService
        except ImportError:  # wasmtime not installed: no policies
            log.warning("wasmtime not available; Wasm policies are off")
            return
        self.wasm_host = WasmHost()
        self.policies = PolicyService(node.scheduling)  # type: ignore[arg-type]
        self.policies.start()
        add_policy_routes(app, self.policies, self.wasm_host)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self.policies is not None:
            await self.policies.stop()
        if self.wasm_host is not None:
            self.wasm_host.close()
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
        if self._http is not None:
            await self._http.cleanup()
        if self.node is not None:
            sched = self.node.scheduling
            if sched is not None and hasattr(sched, "stop"):
                await sched.stop()
            await self.node.stop()
        await self.store.close()
