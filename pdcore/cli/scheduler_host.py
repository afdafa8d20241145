"""`kubepd scheduler-host`: the scheduler role in its own process, as the operator runs
it for each TiKVCluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from typing import Any

from pdcore.cli import logs, security_flags

log = logging.getLogger("kubepd.scheduler")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scheduler-host",
        help="hold the scheduler role of a cluster outside its pd-leader",
        description="Take the cluster's scheduler Lease as its preferred holder (the "
        "pd-leader hands scheduling over, and takes it back when this process is gone), "
        "keep a region view synced from the pd-leader, run checkers, schedulers and "
        "placement rules, and push each operator step to the sidecar of the region "
        "leader's store. The kopf operator runs the same thing for every TiKVCluster.",
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
        "--identity",
        default=f"scheduler-{socket.gethostname()}-{os.getpid()}",
        help="name in the scheduler Lease (default: scheduler-<host>-<pid>)",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, else the in-cluster service account)",
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        default=5.0,
        help="seconds the scheduler Lease lasts without renewal (default 5)",
    )
    p.add_argument(
        "--renew-period", type=float, default=1.0, help="seconds between Lease renewals (default 1)"
    )
    p.add_argument(
        "--status-addr",
        default=None,
        help="HOST:PORT for /health and the scheduling API under /pd/api/v1 (default: none)",
    )
    p.add_argument(
        "--status-interval",
        type=float,
        default=10.0,
        help="seconds between updates of the TiKVCluster's status.scheduling (default 10)",
    )
    p.add_argument(
        "--grpc-addr",
        default=None,
        help="HOST:PORT to serve proposals of store-scoped policies on (kubepdpb.Scheduler); "
        "its URL joins the Lease identity so sidecars find it (default: none, and "
        "the sidecars cannot reach it with store-scoped policies' proposals)",
    )
    p.add_argument(
        "--advertise-host",
        default=env("POD_IP"),
        help="host for the sidecars to reach --grpc-addr at (default: $POD_IP, else its host)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML file with a [security] table (cacert-path, cert-path, key-path, "
        "cert-allowed-cn); the flags below win",
    )
    security_flags.add_arguments(p, "[security] ")
    logs.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pdcore.scheduler_app import SchedulerHost, SchedulerOptions

    logs.setup(args.log_level, args.log_format)
    security = security_flags.security_of(args, security_flags.security_file(args.config))
    opts = SchedulerOptions(
        namespace=args.namespace,
        cluster=args.cluster,
        identity=args.identity,
        kubeconfig=args.kubeconfig,
        lease_duration_s=args.lease_duration,
        renew_period_s=args.renew_period,
        status_addr=args.status_addr,
        status_interval_s=args.status_interval,
        grpc_addr=args.grpc_addr,
        advertise_host=args.advertise_host,
        security=security,
    )

    async def main() -> int:
        host = SchedulerHost(opts)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await host.start()
        except OSError as e:  # its --grpc-addr or --status-addr cannot be had
            log.error("cannot start: %s", e)
            await host.client.close()  # what is left is cancelled as the loop ends
            return 2
        await stop.wait()
        log.info("shutting down: handing the scheduler role back")
        await host.stop()
        return 0

    return asyncio.run(main())
