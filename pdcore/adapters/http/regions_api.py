"""PD's region read endpoints (`/pd/api/v1/region...`, `/regions...`, `/stats/region`)
in PD's JSON shapes.

Keys arrive percent-escaped (PD's Go HTTP client sends `url.QueryEscape(key)`); they
are decoded to bytes, never through UTF-8 text, so TiDB's binary keys find their
region. `?format=hex` takes them hex-encoded instead, as PD does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from pdcore.adapters.http.common import (
    API,
    bad_request,
    bootstrapped_node,
    error,
    json_response,
    uint_path,
)
from pdcore.domain.region import Peer, PeerRole, Region
from pdcore.service.node import PdNode

DEFAULT_LIMIT = 16
MAX_LIMIT = 10240
REGION_NOT_FOUND = "[PD:region:ErrRegionNotFound]region {} not found"
EMPTY_REGION_MIB = 1
REGION_MAX_SIZE_MIB = 144  # TiKV's region-max-size default (96 MiB split size * 1.5)
REGION_MAX_KEYS = 1_440_000
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})(.{0,2})")


# -- keys ----------------------------------------------------------------------------
def query_unescape(raw: str) -> bytes:
    """Go's `url.QueryUnescape` to bytes: '+' is a space, %XX a byte; a bad escape
    raises a 400 with Go's message."""
    bad = _BAD_ESCAPE.search(raw)
    if bad:
        raise bad_request(f'invalid URL escape "%{bad.group(1)}"')
    return unquote_to_bytes(raw.replace("+", " "))


def raw_query(request: web.Request) -> dict[str, bytes]:
    """Query parameters as bytes (aiohttp's `request.query` decodes them as UTF-8)."""
    out: dict[str, bytes] = {}
    for part in request.rel_url.raw_query_string.split("&"):
        name, _, value = part.partition("=")
        if name:
            out.setdefault(query_unescape(name).decode(errors="replace"), query_unescape(value))
    return out


def _hex_if_asked(request: web.Request, *keys: bytes) -> list[bytes]:
    if request.query.get("format") != "hex":
        return list(keys)
    try:
        return [bytes.fromhex(k.decode()) for k in keys]
    except ValueError as e:
        raise bad_request(f"encoding/hex: {e}") from None


def _limit(request: web.Request, default: int = DEFAULT_LIMIT) -> int:
    text = request.query.get("limit")
    if text is None or text == "":
        return default
    try:
        limit = int(text)
    except ValueError:
        raise bad_request(f'strconv.Atoi: parsing "{text}": invalid syntax') from None
    if limit <= 0:
        raise bad_request("limit must be positive")  # PD: "limit must be a positive number"
    return min(limit, MAX_LIMIT)


# -- JSON --------------------------------------------------------------------------
_ROLE_NAMES = {
    PeerRole.VOTER: "Voter",
    PeerRole.LEARNER: "Learner",
    PeerRole.INCOMING_VOTER: "IncomingVoter",
    PeerRole.DEMOTING_VOTER: "DemotingVoter",
}


def peer_json(p: Peer) -> dict[str, Any]:
    """PD's MetaPeer: metapb.Peer's fields (zero values left out) + role_name."""
    out: dict[str, Any] = {"id": p.id, "store_id": p.store_id}
    if p.role:
        out["role"] = int(p.role)
    if p.is_witness:
        out["is_witness"] = True
    out["role_name"] = _ROLE_NAMES[PeerRole(p.role)]
    if p.is_learner:
        out["is_learner"] = True
    return out


def region_json(r: Region) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "start_key": r.start_key.hex().upper(),
        "end_key": r.end_key.hex().upper(),
        "epoch": {"conf_ver": r.epoch.conf_ver, "version": r.epoch.version},
        "peers": [peer_json(p) for p in r.peers],
        "leader": peer_json(r.leader) if r.leader else {"role_name": "Voter"},
        "cpu_usage": r.cpu_usage,
        "written_bytes": r.flow.bytes_written,
        "read_bytes": r.flow.bytes_read,
        "written_keys": r.flow.keys_written,
        "read_keys": r.flow.keys_read,
        "approximate_size": r.approximate_size,
        "approximate_keys": r.approximate_keys,
        "approximate_kv_size": 0,
        "approximate_columnar_kv_size": 0,
    }
    if r.down_peers:
        out["down_peers"] = [
            {"peer": peer_json(d.peer), "down_seconds": d.down_seconds} for d in r.down_peers
        ]
    if r.pending_peers:
        out["pending_peers"] = [peer_json(p) for p in r.pending_peers]
    return out


def regions_json(regions: Iterable[Region]) -> dict[str, Any]:
    out = [region_json(r) for r in regions]
    return {"count": len(out), "regions": out}


def _region(request: web.Request) -> tuple[PdNode, Region]:
    node = bootstrapped_node(request)
    rid = uint_path(request)
    r = node.tree.get(rid)
    if r is None:
        raise web.HTTPNotFound(
            text=json.dumps(REGION_NOT_FOUND.format(rid)), content_type="application/json"
        )
    return node, r


# -- handlers ------------------------------------------------------------------------
async def region_by_id(request: web.Request) -> web.Response:
    _, r = _region(request)
    return json_response(region_json(r))


async def region_by_key(request: web.Request) -> web.Response:
    node = bootstrapped_node(request)
    # The raw path segment: aiohttp's match_info has already decoded it as UTF-8.
    raw = request.rel_url.raw_path.rsplit("/", 1)[-1]
    (key,) = _hex_if_asked(request, query_unescape(raw))
    r = node.tree.find(key)
    if r is None:
        return error(REGION_NOT_FOUND.format("%v"), 404)
    return json_response(region_json(r))


async def regions(request: web.Request) -> web.Response:
    return json_response(regions_json(bootstrapped_node(request).tree))


async def regions_count(request: web.Request) -> web.Response:
    return json_response({"count": len(bootstrapped_node(request).tree)})


async def scan_regions(request: web.Request) -> web.Response:
    node = bootstrapped_node(request)
    q = raw_query(request)
    start, end = _hex_if_asked(request, q.get("key", b""), q.get("end_key", b""))
    if end and start >= end:
        return json_response(regions_json([]))
    return json_response(regions_json(node.tree.scan(start, end, _limit(request))))


async def store_regions(request: web.Request) -> web.Response:
    node = bootstrapped_node(request)
    sid = uint_path(request)
    kind = request.query.get("type", "all")
    if kind not in ("all", "leader", "learner"):
        return error(f"unknown type {kind}")

    def wanted(r: Region) -> bool:
        if kind == "leader":
            return r.leader_store_id == sid
        p = r.peer_on(sid)
        return p is not None and (kind == "all" or p.is_learner)

    return json_response(regions_json(r for r in node.tree if wanted(r)))


async def siblings(request: web.Request) -> web.Response:
    node, r = _region(request)
    around = [x for x in (node.tree.prev(r.start_key), node.tree.next(r)) if x is not None]
    return json_response(regions_json(around))


def _top(key: Callable[[Region], float]) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        node = bootstrapped_node(request)
        ranked = sorted(node.tree, key=key, reverse=True)[: _limit(request)]
        return json_response(regions_json(ranked))

    return handler


def _check(pred: Callable[[PdNode, Region], bool]) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        node = bootstrapped_node(request)
        return json_response(regions_json(r for r in node.tree if pred(node, r)))

    return handler


def _offline(node: PdNode, r: Region) -> bool:
    return any((s := node.get_store(p.store_id)) is not None and s.is_offline for p in r.peers)


def _undersized(node: PdNode, r: Region) -> bool:
    sched = node.config.schedule
    return (
        r.approximate_size <= sched.max_merge_region_size
        and r.approximate_keys <= sched.max_merge_region_keys
    )


CHECKS: dict[str, Callable[[PdNode, Region], bool]] = {
    "miss-peer": lambda n, r: len(r.voters) < n.config.replication.max_replicas,
    "extra-peer": lambda n, r: len(r.peers) > n.config.replication.max_replicas,
    "down-peer": lambda n, r: bool(r.down_peers),
    "pending-peer": lambda n, r: bool(r.pending_peers),
    "learner-peer": lambda n, r: bool(r.learners),
    "offline-peer": _offline,
    "empty-region": lambda n, r: r.approximate_size <= EMPTY_REGION_MIB,
    "oversized-region": lambda n, r: (
        r.approximate_size > REGION_MAX_SIZE_MIB or r.approximate_keys > REGION_MAX_KEYS
    ),
    "undersized-region": _undersized,
}


async def range_holes(request: web.Request) -> web.Response:
    """Key ranges no region covers (upper-case hex pairs), as PD lists them."""
    holes: list[list[str]] = []
    last_end = b""
    first = True
    for r in bootstrapped_node(request).tree:
        if (first and r.start_key) or (not first and r.start_key != last_end):
            holes.append([last_end.hex().upper(), r.start_key.hex().upper()])
        first, last_end = False, r.end_key
        if not last_end:
            break
    else:
        if not first:
            holes.append([last_end.hex().upper(), ""])
    return json_response(holes)


async def region_stats(request: web.Request) -> web.Response:
    """`/stats/region`: totals over a key range (PD's statistics.RegionStats)."""
    node = bootstrapped_node(request)
    q = raw_query(request)
    start, end = _hex_if_asked(request, q.get("start_key", b""), q.get("end_key", b""))
    rs = node.tree.scan(start, end) if not end or start < end else []
    if "count" in request.query:
        return json_response({"count": len(rs)})
    leaders: dict[str, int] = {}
    peers: dict[str, int] = {}
    leader_size: dict[str, int] = {}
    peer_size: dict[str, int] = {}
    for r in rs:
        ls = str(r.leader_store_id)
        leaders[ls] = leaders.get(ls, 0) + 1
        leader_size[ls] = leader_size.get(ls, 0) + r.approximate_size
        for p in r.peers:
            ps = str(p.store_id)
            peers[ps] = peers.get(ps, 0) + 1
            peer_size[ps] = peer_size.get(ps, 0) + r.approximate_size
    return json_response(
        {
            "count": len(rs),
            "empty_count": sum(1 for r in rs if r.approximate_size <= EMPTY_REGION_MIB),
            "storage_size": sum(r.approximate_size for r in rs),
            "storage_keys": sum(r.approximate_keys for r in rs),
            "store_leader_count": leaders,
            "store_peer_count": peers,
            "store_leader_size": leader_size,
            "store_peer_size": peer_size,
        }
    )


def add_region_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(API + "/region/id/{id}", region_by_id)
    r.add_get(API + "/region/key/{key}", region_by_key)
    r.add_get(API + "/regions", regions)
    r.add_get(API + "/regions/count", regions_count)
    r.add_get(API + "/regions/key", scan_regions)
    r.add_get(API + "/regions/store/{id}", store_regions)
    r.add_get(API + "/regions/sibling/{id}", siblings)
    r.add_get(API + "/regions/range-holes", range_holes)
    tops: dict[str, Callable[[Region], float]] = {
        "writeflow": lambda x: x.flow.bytes_written,
        "readflow": lambda x: x.flow.bytes_read,
        "writequery": lambda x: x.flow.query_write,
        "readquery": lambda x: x.flow.query_read,
        "confver": lambda x: x.epoch.conf_ver,
        "version": lambda x: x.epoch.version,
        "size": lambda x: x.approximate_size,
        "keys": lambda x: x.approximate_keys,
        "cpu": lambda x: x.cpu_usage,
    }
    for name, key in tops.items():
        r.add_get(f"{API}/regions/{name}", _top(key))
    for name, pred in CHECKS.items():
        r.add_get(f"{API}/regions/check/{name}", _check(pred))
    r.add_get(API + "/stats/region", region_stats)
