"""Prometheus metrics, named as PD names them where PD has the metric.

Gauges are computed at scrape time from the node (a custom collector), so the hot
paths pay nothing but the counters the node keeps anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pdcore.service.node import PdNode


class NodeCollector(Collector):
    def __init__(self, node: PdNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        now = node.clock.now_s()
        max_down = node.config.schedule.max_store_down_time_s
        cluster = GaugeMetricFamily("pd_cluster_status", "Cluster status by type.", labels=["type"])
        names = [s.state_name(now, max_down) for s in node.stores()]
        for kind in ("Up", "Offline", "Tombstone", "Disconnected", "Down"):
            cluster.add_metric([f"store_{kind.lower()}_count"], names.count(kind))
        cluster.add_metric(["region_count"], len(node.tree))
        cluster.add_metric(["leader_count"], len(node.tree))
        yield cluster

        store = GaugeMetricFamily(
            "pd_scheduler_store_status", "Per-store status.", labels=["address", "store", "type"]
        )
        for s in node.stores():
            counts = node.tree.store_stats(s.id)
            labels = [s.address, str(s.id)]
            store.add_metric([*labels, "region_count"], counts.region_count)
            store.add_metric([*labels, "leader_count"], counts.leader_count)
            store.add_metric([*labels, "region_size"], counts.region_size)
            store.add_metric([*labels, "leader_size"], counts.leader_size)
            store.add_metric([*labels, "store_capacity"], s.stats.capacity)
            store.add_metric([*labels, "store_available"], s.stats.available)
            store.add_metric([*labels, "store_used"], s.stats.used_size)
        yield store

        hb = CounterMetricFamily(
            "pd_scheduler_region_heartbeat", "Region heartbeats handled.", labels=["type", "status"]
        )
        st = node.stats
        hb.add_metric(["report", "ok"], st.region_heartbeats - st.region_heartbeats_rejected)
        hb.add_metric(["report", "err"], st.region_heartbeats_rejected)
        hb.add_metric(["unchanged", "ok"], st.region_heartbeats_unchanged)
        yield hb

        errors = CounterMetricFamily(
            "kubepd_heartbeat_stream_errors",
            "Heartbeat stream read loops that failed other than by the client going away.",
            labels=["stream"],
        )
        for stream, n in sorted(st.stream_errors.items()):
            errors.add_metric([stream], n)
        yield errors
        yield CounterMetricFamily(
            "pd_scheduler_store_heartbeat", "Store heartbeats handled.", value=st.store_heartbeats
        )
        tso = CounterMetricFamily("pd_tso_events", "TSO events.", labels=["type"])
        tso.add_metric(["request"], st.tso_requests)
        tso.add_metric(["timestamps"], st.tso_timestamps)
        yield tso
        yield CounterMetricFamily("pd_id_allocated", "IDs handed out.", value=st.ids_allocated)
        ts = GaugeMetricFamily("pd_cluster_tso", "TSO state.", labels=["type"])
        ts.add_metric(["tso_physical"], node.tso_alloc.physical)
        ts.add_metric(["tso_window"], node.tso_alloc.saved_until)
        yield ts
        sent = CounterMetricFamily(
            "pd_hbstream_region_message", "Commands pushed on heartbeat streams.", labels=["type"]
        )
        sent.add_metric(["push"], node.streams.sent)
        sent.add_metric(["skip"], node.streams.undeliverable)
        yield sent


class Metrics:
    def __init__(self, node: PdNode) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(node))
        self.tso_duration = Histogram(
            "pd_server_handle_tso_duration_seconds",
            "Time to handle a TSO request.",
            registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0),
        )
