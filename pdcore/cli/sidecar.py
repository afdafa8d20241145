"""`kubepd sidecar`: PD as the sidecar of one TiKV pod, with state in Kubernetes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from pdcore.cli import logs, security_flags

log = logging.getLogger("kubepd.sidecar")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sidecar",
        help="run as the PD sidecar of a TiKV pod (state in Kubernetes custom resources)",
        description="Serve the PD gRPC API to the TiKV in this pod. Durable state lives in the "
        "cluster's PDMeta and TiKVStore resources; one sidecar holds the pd-leader Lease and "
        "serves TSO, IDs and writes, the others follow: reads from a synced region cache, TSO "
        "batched to the leader, writes forwarded, and only changed heartbeats forwarded.",
    )
    env = os.environ.get
    p.add_argument(
        "--namespace",
        default=env("POD_NAMESPACE", "default"),
        help="namespace of the cluster's resources (default: $POD_NAMESPACE or default)",
    )
    p.add_argument(
        "--cluster",
        default=env("KUBEPD_CLUSTER"),
        required=env("KUBEPD_CLUSTER") is None,
        help="TiKVCluster name (default: $KUBEPD_CLUSTER)",
    )
    p.add_argument(
        "--pod-name",
        default=env("POD_NAME"),
        required=env("POD_NAME") is None,
        help="this pod's name, the identity in the Leases (default: $POD_NAME)",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, else the in-cluster service account)",
    )
    p.add_argument(
        "--client-urls",
        default="http://127.0.0.1:2379",
        help="URL to serve PD gRPC and PD's HTTP API on, one port as PD "
        "(default: http://127.0.0.1:2379)",
    )
    p.add_argument(
        "--advertise-client-urls",
        default=None,
        help="URL other sidecars reach this one at (default: --client-urls)",
    )
    p.add_argument(
        "--status-addr",
        default="127.0.0.1:2381",
        help="HOST:PORT for /health, /metrics and /pd/api/v1 (default: 127.0.0.1:2381)",
    )
    p.add_argument(
        "--client-port-http",
        default="on",
        choices=["on", "off"],
        help="serve PD's HTTP API on the client URL beside gRPC, HTTP writes on a follower "
        "forwarded to the pd-leader; 'off' leaves the client port to gRPC alone (HTTP stays "
        "on --status-addr, unforwarded; give every sidecar the same value) (default: on)",
    )
    p.add_argument(
        "--data-dir", default=None, help="local directory for the region snapshot (optional)"
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        default=5.0,
        help="seconds a pd-leader or scheduler Lease lasts without renewal (default 5)",
    )
    p.add_argument(
        "--renew-period", type=float, default=1.0, help="seconds between Lease renewals (default 1)"
    )
    security_flags.add_arguments(p)
    logs.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pdcore.adapters.kube.errors import ApiError
    from pdcore.sidecar_app import SidecarOptions, SidecarServer

    logs.setup(args.log_level, args.log_format)
    opts = SidecarOptions(
        namespace=args.namespace,
        cluster=args.cluster,
        pod_name=args.pod_name,
        kubeconfig=args.kubeconfig,
        client_urls=[args.client_urls],
        advertise_client_urls=[args.advertise_client_urls] if args.advertise_client_urls else None,
        status_addr=args.status_addr,
        http_on_client_port=args.client_port_http == "on",
        data_dir=args.data_dir,
        lease_duration_s=args.lease_duration,
        renew_period_s=args.renew_period,
        security=security_flags.security_of(args),
    )

    async def main() -> int:
        server = SidecarServer(opts)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
        except ApiError as e:
            hint = (
                "; the sidecar's ServiceAccount needs the kubepd-sidecar ClusterRole bound in "
                f"namespace {opts.namespace} (deploy/rbac.yaml)"
                if e.status in (401, 403)
                else ""
            )
            log.error("cannot start: the API server refused: %s%s", e, hint)
            await server.client.close()  # nothing else was started
            return 2
        await stop.wait()
        log.info("shutting down")
        await server.stop()
        return 0

    return asyncio.run(main())
