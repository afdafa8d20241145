"""`kubepd tikv-standin`: one simulated TiKV store that takes TiKV's own command line.

In a TiKV pod it replaces tikv-server (the image `kubepd-tikv-standin` runs it), so the pod
is the stand-in plus the kubepd sidecar talking over the pod's localhost, exactly as TiKV
would: it finds the cluster with GetMembers, takes a store id (kept in --data-dir across
restarts), bootstraps the cluster if no one has (the first region, on this store), joins
with PutStore under its --advertise-addr, and then heartbeats its store and the regions
it leads and executes what PD sends on the heartbeat stream, through pdsim's Fleet. The
store that bootstraps splits the first region into --initial-regions regions (what a new
TiDB's tables would do), so that there is something to balance.

It opens --addr (TiKV's port, what the pod's readiness probe checks) once it has joined,
and serves there the stand-ins' peer protocol (pdsim.peers): the snapshot of a region to
a new peer, a leader hand-off, a removed peer, followers' updates. Its regions (the
copies of every region it has a peer of) are kept in --data-dir across restarts. Not
played: raft elections (a region whose leader's pod is down waits for it).

Of TiKV's --config file it reads the [security] table (ca-path, cert-path, key-path): with
it, it dials its PD and serves and dials the peer protocol over mutual TLS, as TiKV does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from pdcore.adapters.clock import ScaledClock
from pdcore.adapters.tls import HttpTls, Security, dialer
from pdcore.cli import logs, security_flags
from pdcore.domain.region import Peer
from pdcore.proto import metapb_pb2, pdpb_pb2
from pdsim.fleet import Fleet, FleetConfig
from pdsim.model import SimRegion
from pdsim.peers import PeerLink

log = logging.getLogger("kubepd.tikv-standin")
T = TypeVar("T")
STORE_FILE = "standin-store.json"
REGIONS_FILE = "standin-regions.json"
REGION_SIZE_MIB = 64  # each region's size after the first split (above the merge limit)
RETRY_S = 1.0


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tikv-standin",
        help="play one TiKV store (simulated) with tikv-server's command line, for test pods",
        description="A simulated TiKV store for a TiKV pod: registers with the PD at --pd "
        "(the pod's kubepd sidecar), bootstraps the cluster if it is the first, heartbeats "
        "and executes PD's commands. Accepts tikv-server's flags; of --config only the "
        "[security] table is read.",
    )
    p.add_argument("--pd", default="127.0.0.1:2379", help="PD endpoints, comma-separated")
    p.add_argument("--addr", default="127.0.0.1:20160", help="HOST:PORT to listen on")
    p.add_argument("--advertise-addr", default=None, help="address PD tells others (--addr)")
    p.add_argument("--status-addr", default=None, help="accepted for TiKV's sake; unused")
    p.add_argument("--data-dir", default=None, help="where the store id is kept")
    p.add_argument(
        "--config",
        default=None,
        help="TiKV's config file: its [security] ca-path, cert-path, key-path (mutual TLS "
        "to PD and between stores) are used, the rest ignored",
    )
    p.add_argument("--labels", default="", help="store labels, k=v,k=v")
    p.add_argument(
        "--store-heartbeat", type=float, default=10.0, help="seconds between store heartbeats"
    )
    p.add_argument(
        "--region-heartbeat", type=float, default=60.0, help="seconds between region heartbeats"
    )
    p.add_argument(
        "--initial-regions",
        type=int,
        default=16,
        help="regions the bootstrapping store splits the key space into",
    )
    logs.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, args.log_format)
    try:
        labels = parse_labels(args.labels)
    except ValueError as e:
        log.error("%s", e)
        return 2
    asyncio.run(serve(args, labels, tikv_security(args.config)))
    return 0


def tikv_security(path: str | None) -> Security:
    """TiKV's [security] table of its config file (a missing file: none); SystemExit
    names what is wrong."""
    if not path or not Path(path).exists():
        return Security()
    table = security_flags.read_toml(path).get("security", {})
    if not isinstance(table, dict):
        raise SystemExit(f"kubepd: [security] in {path} must be a table")
    sec = Security(
        cacert_path=str(table.get("ca-path", "")),
        cert_path=str(table.get("cert-path", "")),
        key_path=str(table.get("key-path", "")),
    )
    try:
        sec.check()
    except ValueError as e:
        raise SystemExit(f"kubepd: [security] in {path}: {e}") from None
    return sec


def client_ssl(sec: Security) -> ssl.SSLContext | None:
    """How this store dials other stores: trusting the CA, presenting its certificate."""
    if not sec.enabled:
        return None
    ctx = ssl.create_default_context(cafile=sec.cacert_path or None)
    ctx.load_cert_chain(sec.cert_path, sec.key_path)
    return ctx


def parse_labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad label {item!r}: want key=value")
        out[key] = value
    return out


def split_host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "0.0.0.0", int(port)


async def retry(what: str, fn: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """Like TiKV: keep trying while PD (the sidecar, its pd-leader) is not there yet."""
    while True:
        try:
            return await fn()
        except grpc.aio.AioRpcError as e:
            log.info("%s: %s; retrying", what, e.details())
        except RuntimeError as e:
            log.info("%s: %s; retrying", what, e)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY_S)
        if stop.is_set():
            raise asyncio.CancelledError


def load_store_id(data_dir: str | None) -> int | None:
    if data_dir is None:
        return None
    path = Path(data_dir) / STORE_FILE
    if not path.exists():
        return None
    return int(json.loads(path.read_text())["store_id"])


def save_store_id(data_dir: str | None, store_id: int) -> None:
    if data_dir is None:
        return
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    (Path(data_dir) / STORE_FILE).write_text(json.dumps({"store_id": store_id}))


async def join(fleet: Fleet, args: argparse.Namespace, labels: dict[str, str]) -> int:
    """GetMembers, a store id, Bootstrap if needed: what TiKV does before PutStore."""
    members = await fleet.stub.GetMembers(pdpb_pb2.GetMembersRequest(), timeout=5)
    if members.header.HasField("error") or not members.header.cluster_id:
        raise RuntimeError(f"PD not ready: {members.header.error.message or 'no cluster id'}")
    fleet.cluster_id = members.header.cluster_id
    store_id = load_store_id(args.data_dir)
    if store_id is None:
        (store_id,) = await fleet.alloc_ids(1)
        save_store_id(args.data_dir, store_id)
    address = args.advertise_addr or args.addr
    boot = await fleet.stub.IsBootstrapped(
        pdpb_pb2.IsBootstrappedRequest(header=fleet.header()), timeout=5
    )
    if boot.header.HasField("error"):
        raise RuntimeError(boot.header.error.message)
    if not boot.bootstrapped:
        region_id, peer_id = await fleet.alloc_ids(2)
        resp = await fleet.stub.Bootstrap(
            pdpb_pb2.BootstrapRequest(
                header=fleet.header(),
                store=metapb_pb2.Store(
                    id=store_id,
                    address=address,
                    version="8.5.0",
                    labels=[metapb_pb2.StoreLabel(key=k, value=v) for k, v in labels.items()],
                ),
                region=metapb_pb2.Region(
                    id=region_id,
                    region_epoch=metapb_pb2.RegionEpoch(conf_ver=1, version=1),
                    peers=[metapb_pb2.Peer(id=peer_id, store_id=store_id)],
                ),
            ),
            timeout=10,
        )
        err = resp.header.error
        if resp.header.HasField("error") and err.type != pdpb_pb2.ALREADY_BOOTSTRAPPED:
            raise RuntimeError(f"bootstrap: {err.message}")
        if not resp.header.HasField("error"):
            log.info("bootstrapped the cluster", extra={"store": store_id, "region": region_id})
            peer = Peer(peer_id, store_id)
            fleet.regions[region_id] = SimRegion(
                region_id, b"", b"", [peer], peer_id, size_mib=REGION_SIZE_MIB, keys=640_000
            )
    return store_id


async def presplit(fleet: Fleet, count: int) -> None:
    """Split the bootstrap region (the only one, on this store) into `count` regions, at
    keys spread evenly; each split through PD (AskBatchSplit, ReportBatchSplit)."""
    keys = [b"t%08d" % (i * (100_000_000 // count)) for i in range(1, count)]
    for key in keys:
        last = max(fleet.regions.values(), key=lambda r: r.start)
        if last.start >= key:
            continue  # split by an earlier attempt
        before = len(fleet.regions)
        await fleet.split(last, [key])
        if len(fleet.regions) == before:
            raise RuntimeError(f"split of region {last.id} at {key!r} refused")
    for r in fleet.regions.values():
        r.size_mib, r.keys = REGION_SIZE_MIB, REGION_SIZE_MIB * 10_000


async def serve(
    args: argparse.Namespace, labels: dict[str, str], sec: Security | None = None
) -> None:
    sec = sec or Security()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = FleetConfig(store_hb_s=args.store_heartbeat, region_hb_s=args.region_heartbeat)
    pd = args.pd.split(",")[0].removeprefix("http://").removeprefix("https://")
    fleet = Fleet(pd, "", ScaledClock(1.0), config, connect=dialer(sec))
    link: PeerLink | None = None
    try:
        store_id = await retry("joining the cluster", lambda: join(fleet, args, labels), stop)
        bootstrapped = bool(fleet.regions)
        state = Path(args.data_dir) / REGIONS_FILE if args.data_dir else None
        link = PeerLink(
            fleet,
            store_id,
            lambda sid: store_address(fleet, sid),
            client_ssl=client_ssl(sec),
            server_ssl=HttpTls(sec).context if sec.enabled else None,
            state_file=state,
        )
        if not bootstrapped and (loaded := link.load()):
            log.info("regions read back", extra={"store": store_id, "regions": loaded})
        address = args.advertise_addr or args.addr
        await retry(
            "PutStore",
            lambda: fleet.add_store(labels, address=address, store_id=store_id),
            stop,
        )
        if bootstrapped and args.initial_regions > 1:
            await retry("splitting", lambda: presplit(fleet, args.initial_regions), stop)
        for r in fleet.regions.values():
            fleet.heartbeat(r)
        link.save()
        host, port = split_host_port(args.addr)
        await link.start(host, port)
        log.info("store up", extra={"store": store_id, "address": address})
        while not stop.is_set():
            await fleet.step()
            link.save()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), fleet.cfg.tick_wall_s * 10)
    except asyncio.CancelledError:
        pass
    finally:
        if link is not None:
            link.save()
            await link.close()
        await fleet.close()


async def store_address(fleet: Fleet, store_id: int) -> str:
    """Where another store listens: PD's GetStore (through the sidecar)."""
    try:
        resp = await fleet.stub.GetStore(
            pdpb_pb2.GetStoreRequest(header=fleet.header(), store_id=store_id), timeout=5
        )
    except grpc.aio.AioRpcError as e:
        raise LookupError(f"GetStore({store_id}): {e.details()}") from e
    if resp.header.HasField("error") or not resp.store.address:
        raise LookupError(f"GetStore({store_id}): {resp.header.error.message or 'no address'}")
    return str(resp.store.address)
