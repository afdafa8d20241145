"""PD's config endpoints under /pd/api/v1/config, in PD's key names and JSON types
(see pd_config): what `pd-ctl config show/set` and PD's Go HTTP client use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pdcore.adapters.http import pd_config
from pdcore.adapters.http.common import NODE_KEY, error, json_object, json_response
from pdcore.adapters.http.rules_api import RULES_KEY
from pdcore.adapters.http.stores_api import store_limits
from pdcore.domain.config import ClusterConfig
from pdcore.domain.errors import InvalidValue
from pdcore.scheduling.rule_config import RuleError
from pdcore.service.node import PdNode

PREFIX = "/pd/api/v1/config"


def server_config_json(node: PdNode) -> dict[str, Any]:
    """`config show all`: PD's whole server config, with the parts kubepd has."""
    m = node.member
    urls = ",".join(m.client_urls)
    peers = ",".join(m.peer_urls or m.client_urls)
    return {
        "client-urls": urls,
        "peer-urls": peers,
        "advertise-client-urls": urls,
        "advertise-peer-urls": peers,
        "name": m.name,
        "data-dir": m.deploy_path,
        "force-new-cluster": False,
        "enable-grpc-gateway": True,
        "initial-cluster": f"{m.name}={peers}",
        "initial-cluster-state": "new",
        "initial-cluster-token": "pd-cluster",
        "join": "",
        "lease": 3,
        "log": {"level": "info", "format": "json"},
        "tso-save-interval": pd_config.format_duration(node.tso_alloc.save_interval_ms / 1000),
        "tso-update-physical-interval": "50ms",
        "enable-local-tso": False,
        "metric": {"job": m.name, "address": "", "interval": "15s"},
        "schedule": schedule_json(node),
        "replication": pd_config.replication_json(node.config),
        "pd-server": pd_server_json(),
        "cluster-version": node.cluster_version(),
        "labels": {},
        "quota-backend-bytes": "8GiB",
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention-v2": "1h",
        "tick-interval": "500ms",
        "election-interval": "3s",
        "enable-prevote": True,
        "max-request-bytes": 157286400,
        "security": {"cacert-path": "", "cert-path": "", "key-path": "", "redact-info-log": False},
        "label-property": {},
        "replication-mode": replication_mode_json(),
    }


def pd_server_json() -> dict[str, Any]:
    return {
        "use-region-storage": "true",
        "max-gap-reset-ts": "24h0m0s",
        "key-type": "table",
        "runtime-services": "",
        "metric-storage": "",
        "dashboard-address": "auto",
        "flow-round-by-digit": 3,
        "min-resolved-ts-persistence-interval": "1s",
        "server-memory-limit": 0,
        "server-memory-limit-gc-trigger": 0.7,
        "enable-gogc-tuner": "false",
        "gc-tuner-threshold": 0.6,
        "block-safe-point-v1": "false",
    }


def replication_mode_json() -> dict[str, Any]:
    return {
        "replication-mode": "majority",
        "dr-auto-sync": {
            "label-key": "",
            "primary": "",
            "dr": "",
            "primary-replicas": 0,
            "dr-replicas": 0,
            "wait-store-timeout": "1m0s",
            "pause-region-split": "false",
        },
    }


async def config_get(request: web.Request) -> web.Response:
    return json_response(server_config_json(request.app[NODE_KEY]))


async def _save(request: web.Request, node: PdNode, new: ClusterConfig) -> web.Response:
    """Where rules are written here (the embedded mode), a replication change also
    rewrites the default rule, or is refused as PD refuses it."""
    if new != node.config:
        keeper = request.app.get(RULES_KEY)
        try:
            default = (
                keeper.replication_change(node.config.replication, new.replication)
                if keeper is not None
                else None
            )
        except RuleError as e:
            return error(e.message)
        try:
            await node.set_config(new)
        except InvalidValue as e:  # the domain's cross-field rules: PD answers 400
            return error(e.message)
        if keeper is not None and default is not None:
            await keeper.write(lambda e: e.set_rule(default))
    return json_response("The config is updated.")


async def config_post(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    body = await json_object(request)
    if "ttlSecond" in request.query:
        # BR and Lightning set config for a while and rely on PD to restore it; taking
        # such a change for good would leave scheduling altered after they finish.
        return error("kubepd does not support config with a TTL (ttlSecond)")
    try:
        new, version = pd_config.update_any(node.config, body)
    except ValueError as e:  # ConfigError, or the domain's own validation
        return error(str(e))
    if version is not None and version != node.cluster_version():
        return error(_VERSION_FIXED)
    return await _save(request, node, new)


def schedule_json(node: PdNode) -> dict[str, Any]:
    out = pd_config.schedule_json(node.config)
    out["store-limit"] = store_limits(node)
    return out


async def schedule_get(request: web.Request) -> web.Response:
    return json_response(schedule_json(request.app[NODE_KEY]))


async def replicate_get(request: web.Request) -> web.Response:
    return json_response(pd_config.replication_json(request.app[NODE_KEY].config))


def _section_post(
    update: Callable[[ClusterConfig, dict[str, Any]], ClusterConfig],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        node = request.app[NODE_KEY]
        try:
            new = update(node.config, await json_object(request))
        except ValueError as e:
            return error(str(e))
        return await _save(request, node, new)

    return handler


_VERSION_FIXED = "kubepd derives cluster-version from its stores' versions; it cannot be set"


async def cluster_version_get(request: web.Request) -> web.Response:
    return json_response(request.app[NODE_KEY].cluster_version())


async def cluster_version_post(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    version = (await json_object(request)).get("cluster-version")
    if not isinstance(version, str):
        return error(f"input value {version} is illegal")
    if version.lstrip("v") != node.cluster_version():
        return error(_VERSION_FIXED)
    return json_response("The cluster-version is updated.")


async def pd_server_get(request: web.Request) -> web.Response:
    return json_response(pd_server_json())


async def label_property_get(request: web.Request) -> web.Response:
    return json_response({})


async def replication_mode_get(request: web.Request) -> web.Response:
    return json_response(replication_mode_json())


def add_config_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX, config_get)
    r.add_post(PREFIX, config_post)
    r.add_get(PREFIX + "/schedule", schedule_get)
    r.add_post(PREFIX + "/schedule", _section_post(pd_config.update_schedule))
    r.add_get(PREFIX + "/replicate", replicate_get)
    r.add_post(PREFIX + "/replicate", _section_post(pd_config.update_replication))
    r.add_get(PREFIX + "/cluster-version", cluster_version_get)
    r.add_post(PREFIX + "/cluster-version", cluster_version_post)
    r.add_get(PREFIX + "/label-property", label_property_get)
    r.add_get(PREFIX + "/pd-server", pd_server_get)
    r.add_get(PREFIX + "/replication-mode", replication_mode_get)
