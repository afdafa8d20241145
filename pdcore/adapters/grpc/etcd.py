"""Registers the etcd v3 API's services on a gRPC server (PD's client port)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pdcore.adapters.grpc.etcd_cluster import ClusterService, MaintenanceService
from pdcore.adapters.grpc.etcd_kv import KvService
from pdcore.adapters.grpc.etcd_lease import LeaseService
from pdcore.adapters.grpc.etcd_watch import WatchService
from pdcore.proto import etcdserverpb_pb2_grpc as rpc
from pdcore.service.etcd import EtcdService


def add_etcd_services(etcd: EtcdService, add: Callable[[Any, Any], None]) -> None:
    """Register the etcd services through `add(add_XServicer_to_server, servicer)` (the
    member's `ClientServer.add`, which also tracks their health)."""
    add(rpc.add_KVServicer_to_server, KvService(etcd))
    add(rpc.add_WatchServicer_to_server, WatchService(etcd))
    add(rpc.add_LeaseServicer_to_server, LeaseService(etcd))
    add(rpc.add_ClusterServicer_to_server, ClusterService(etcd))
    add(rpc.add_MaintenanceServicer_to_server, MaintenanceService(etcd))
