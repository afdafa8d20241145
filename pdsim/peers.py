"""The stand-ins' peer protocol: raft between TiKV stores, played small.

`kubepd tikv-standin` runs one simulated store per process (per pod), each with a Fleet of
one store. A region's leader holds the authoritative copy of the region; every other
store with a peer of it holds a follower copy, so that its store heartbeats count the
peer and it can take the leadership over. When a step of PD's needs another store, the
leader's Fleet asks this link (the Fleet's `Remote`):

* add a peer on store B: the leader sends B the region (meta and size: the snapshot); B
  keeps the copy, and once B has answered, the leader reports the peer as no longer
  pending;
* transfer the leader to B: the leader sends B the region with B's peer as the leader; B
  takes the leadership (it heartbeats the region to PD from then on) and the leader steps
  down once B has answered;
* remove B's peer (or merge the region away): B is told that the region is gone for it;
* anything else the leader changes or reports to PD goes to its followers too, in the
  background, with retries: what raft's log replication would carry.

One message, over HTTP on the store's TiKV port (the address PD knows the store by):
`POST /standin/v1/region` with `{"rev": n, "gone": bool, "region": {...}}`. Every region
carries a revision that its leader bumps at each change it sends and that a new leader
continues from; a store keeps a message only if its revision is above the one it holds
(a late message of a former leader, or one delivered twice, is answered 409 and
dropped), and a store without a peer in the region (or `gone`) drops its copy. While a
leader hands its leadership over it sends nothing else for that region.

The copies can be saved to a JSON file (the stand-in keeps it in its --data-dir), so a
restarted pod comes back with its peers, as TiKV does with its raft state on its volume.
What is not played: elections. A region whose leader's process is gone has no leader
until that store comes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from pdcore.domain.region import Peer, PeerRole
from pdsim.fleet import Fleet
from pdsim.model import SimRegion

log = logging.getLogger("kubepd.tikv-standin.peers")

PATH = "/standin/v1/region"
SEND_TIMEOUT_S = 3.0
RETRY_S = 0.5  # between attempts to deliver a follower's update
# A store that cannot be reached now (`resolve` raises LookupError when PD cannot say where).
UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError, LookupError)


def region_to_json(r: SimRegion) -> dict[str, Any]:
    return {
        "id": r.id,
        "start": r.start.hex(),
        "end": r.end.hex(),
        "peers": [[p.id, p.store_id, int(p.role)] for p in r.peers],
        "leader": r.leader_id,
        "conf_ver": r.conf_ver,
        "version": r.version,
        "size_mib": r.size_mib,
        "keys": r.keys,
        "pending": sorted(r.pending),
    }


def region_from_json(d: dict[str, Any]) -> SimRegion:
    return SimRegion(
        id=int(d["id"]),
        start=bytes.fromhex(d["start"]),
        end=bytes.fromhex(d["end"]),
        peers=[Peer(int(i), int(s), PeerRole(int(role))) for i, s, role in d["peers"]],
        leader_id=int(d["leader"]),
        conf_ver=int(d["conf_ver"]),
        version=int(d["version"]),
        size_mib=int(d["size_mib"]),
        keys=int(d["keys"]),
        pending={int(p) for p in d["pending"]},
    )


def copy_region(r: SimRegion, leader_id: int | None = None) -> SimRegion:
    """A new object with the same state (optionally another leader): a Fleet's timers
    for the old object see it replaced and do nothing."""
    out = region_from_json(region_to_json(r))
    if leader_id is not None:
        out.leader_id = leader_id
    return out


class PeerLink:
    """One store's end of the protocol: the HTTP handler on its TiKV port, and the Fleet's
    `Remote` for the stores of other processes. `resolve(store_id)` gives a store's
    address (PD's GetStore; LookupError if it cannot); `client_ssl` and `server_ssl`
    make it mutual TLS."""

    def __init__(
        self,
        fleet: Fleet,
        store_id: int,
        resolve: Callable[[int], Awaitable[str]],
        *,
        client_ssl: ssl.SSLContext | None = None,
        server_ssl: ssl.SSLContext | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.fleet = fleet
        self.store_id = store_id
        self._resolve = resolve
        self._client_ssl = client_ssl
        self._server_ssl = server_ssl
        self.state_file = state_file
        self.revs: dict[int, int] = {}  # region id -> newest revision seen or made here
        self._addresses: dict[int, str] = {}
        # Per follower store, the newest update of each region not yet delivered.
        self._outbox: dict[int, dict[int, dict[str, Any]]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.dirty = False  # copies changed since the last save
        self.received = 0  # messages kept
        self.refused = 0  # stale messages answered 409
        self.failed_sends = 0  # attempts that found no store to deliver to
        fleet.remote = self

    # -- the server side ------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._server_ssl)
        await site.start()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            rev, gone = int(body["rev"]), bool(body.get("gone", False))
            region = region_from_json(body["region"])
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad message: {e}"}, status=400)
        if not self.accept(rev, region, gone):
            self.refused += 1
            return web.json_response({"error": "stale", "rev": self.revs[region.id]}, status=409)
        self.received += 1
        self.save()  # before answering: a leader steps down, a snapshot counts, on this reply
        return web.json_response({"rev": self.revs[region.id]})

    def accept(self, rev: int, region: SimRegion, gone: bool) -> bool:
        """Apply a region's state from its leader (or a former one); False if stale."""
        if rev <= self.revs.get(region.id, -1):
            return False
        self.revs[region.id] = rev
        self.dirty = True
        if gone or region.peer_on(self.store_id) is None:
            self.fleet.regions.pop(region.id, None)
            return True
        self.fleet.regions[region.id] = region
        if region.leader_store == self.store_id:
            # The leadership came here: report to PD (and so to the other followers).
            self.fleet.heartbeat(region)
        return True

    # -- the Fleet's Remote ---------------------------------------------------------------
    def is_remote(self, store_id: int) -> bool:
        return store_id not in self.fleet.stores

    async def snapshot(self, r: SimRegion, peer: Peer) -> bool:
        """Send the region to the store of its new peer; True once that store has it."""
        return await self._send_now(peer.store_id, r)

    async def transfer(self, r: SimRegion, target: Peer) -> bool:
        """Hand the leadership to `target`; True once its store has taken it (the caller
        then steps down)."""
        return await self._send_now(target.store_id, copy_region(r, leader_id=target.id))

    def changed(self, r: SimRegion) -> None:
        """The leader's state of `r` goes to every follower store, in the background."""
        self.dirty = True
        stores = {p.store_id for p in r.peers if self.is_remote(p.store_id)}
        if not stores:
            return
        msg = self._message(r, gone=False)
        for sid in stores:
            self._queue(sid, msg)

    def dropped(self, r: SimRegion, store_id: int) -> None:
        """The peer of `r` on `store_id` is gone (removed, or the region merged away)."""
        if self.is_remote(store_id):
            self._queue(store_id, self._message(r, gone=True))

    # -- sending --------------------------------------------------------------------------
    def _message(self, r: SimRegion, gone: bool) -> dict[str, Any]:
        rev = self.revs.get(r.id, 0) + 1
        self.revs[r.id] = rev
        self.dirty = True
        return {"rev": rev, "gone": gone, "region": region_to_json(r)}

    async def _send_now(self, store_id: int, r: SimRegion) -> bool:
        try:
            return await self._post(store_id, self._message(r, gone=False))
        except UNREACHABLE as e:
            self.failed_sends += 1
            log.info("store %d unreachable: %s", store_id, e)
            return False

    async def _post(self, store_id: int, msg: dict[str, Any]) -> bool:
        """Deliver one message; False if the receiver holds a newer state (409)."""
        address = self._addresses.get(store_id)
        if address is None:
            address = self._addresses[store_id] = await self._resolve(store_id)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
            )
        scheme = "https" if self._client_ssl is not None else "http"
        url = f"{scheme}://{address}{PATH}"
        async with self._session.post(url, json=msg, ssl=self._client_ssl or False) as resp:
            if resp.status == 409:
                return False
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=await resp.text()
                )
            return True

    def _queue(self, store_id: int, msg: dict[str, Any]) -> None:
        self._outbox.setdefault(store_id, {})[msg["region"]["id"]] = msg
        self._wake.setdefault(store_id, asyncio.Event()).set()
        task = self._senders.get(store_id)
        if task is None or task.done():
            self._senders[store_id] = asyncio.get_running_loop().create_task(
                self._deliver(store_id)
            )

    async def _deliver(self, store_id: int) -> None:
        """One store's updates, oldest first, each retried until it arrives or is
        superseded by a newer one of the same region."""
        pending, wake = self._outbox[store_id], self._wake[store_id]
        while True:
            while not pending:
                wake.clear()
                await wake.wait()
            region_id = next(iter(pending))
            msg = pending[region_id]
            try:
                await self._post(store_id, msg)  # 409: it has this or newer, as good
            except UNREACHABLE as e:
                self.failed_sends += 1
                log.debug("update of region %d for store %d: %s", region_id, store_id, e)
                self._addresses.pop(store_id, None)
                await asyncio.sleep(RETRY_S)
                continue
            if pending.get(region_id) is msg:
                del pending[region_id]

    def undelivered(self) -> int:
        return sum(len(p) for p in self._outbox.values())

    # -- keeping the copies ---------------------------------------------------------------
    def save(self) -> None:
        """Write every copy and its revision to the state file (if any)."""
        if self.state_file is None or not self.dirty:
            return
        data = {
            "regions": [
                {"rev": self.revs.get(r.id, 0), "region": region_to_json(r)}
                for r in self.fleet.regions.values()
            ],
            "revs": {str(k): v for k, v in self.revs.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_file)
        self.dirty = False

    def load(self) -> int:
        """Read the copies back (a restarted store); how many regions."""
        if self.state_file is None or not self.state_file.exists():
            return 0
        data = json.loads(self.state_file.read_text())
        self.revs.update({int(k): int(v) for k, v in data.get("revs", {}).items()})
        for item in data.get("regions", []):
            r = region_from_json(item["region"])
            self.fleet.regions[r.id] = r
        return len(data.get("regions", []))

    async def close(self) -> None:
        for task in self._senders.values():
            task.cancel()
        await asyncio.gather(*self._senders.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
