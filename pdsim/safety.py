"""Safety properties checked at every tick of a swarm run.

* no region loses its last live voter (the fleet's ground truth);
* no two regions overlap, and together they cover the key space;
* no region disappears: one PD knew of and the fleet still holds is known to PD again
  within `LOST_GRACE_S` (a split may hide the parent's id for a moment);
* no TSO regression: every timestamp is above the one before, across PD restarts;
* no id reused: an id PD hands out never names two different things.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from pdcore.domain.region import PeerRole
from pdcore.proto import pdpb_pb2
from pdsim.fleet import Fleet

LOST_GRACE_S = 180.0
VOTERS = (PeerRole.VOTER, PeerRole.INCOMING_VOTER, PeerRole.DEMOTING_VOTER)


@dataclass
class Violation:
    t: float
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"t={self.t:.0f}s {self.kind}: {self.detail}"


@dataclass
class SafetyChecker:
    violations: list[Violation] = field(default_factory=list)
    last_ts: tuple[int, int] = (0, 0)
    timestamps: int = 0
    ids: dict[int, str] = field(default_factory=dict)
    missing_since: dict[int, float] = field(default_factory=dict)
    known: set[int] = field(default_factory=set)

    def fail(self, t: float, kind: str, detail: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(Violation(t, kind, detail))

    # -- ids: the fleet reports every id it is handed -------------------------------
    def claim(self, t: float, id_: int, what: str) -> None:
        owner = self.ids.setdefault(id_, what)
        if owner != what:
            self.fail(t, "id reused", f"id {id_} was {owner}, now {what}")

    # -- the fleet's ground truth ---------------------------------------------------
    def check_fleet(self, t: float, fleet: Fleet) -> None:
        regions = sorted(fleet.regions.values(), key=lambda r: r.start)
        for r in regions:
            live = [
                p
                for p in r.peers
                if p.role in VOTERS
                and (s := fleet.stores.get(p.store_id)) is not None
                and s.up
                and not s.removed
            ]
            if not live:
                self.fail(t, "no live voter", f"region {r.id} peers {r.peers}")
        if regions and regions[0].start != b"":
            self.fail(t, "key space not covered", f"first region starts at {regions[0].start!r}")
        for a, b in itertools.pairwise(regions):
            if a.end != b.start:
                kind = "regions overlap" if (not a.end or a.end > b.start) else "key space gap"
                self.fail(t, kind, f"{a.id} [{a.start!r}, {a.end!r}) then {b.id} at {b.start!r}")
        if regions and regions[-1].end != b"":
            self.fail(t, "key space not covered", f"last region ends at {regions[-1].end!r}")

    def check_pd_regions(self, t: float, fleet: Fleet, node: Any) -> None:
        tree = node.tree
        for rid in fleet.regions:
            if tree.get(rid) is not None:
                self.known.add(rid)
                self.missing_since.pop(rid, None)
            elif rid in self.known:
                since = self.missing_since.setdefault(rid, t)
                if t - since > LOST_GRACE_S:
                    self.fail(
                        t, "region lost", f"PD has not known region {rid} for {t - since:.0f}s"
                    )
                    self.missing_since[rid] = t  # report again only after another grace
        for rid in list(self.known):
            if rid not in fleet.regions:  # merged away in the fleet: PD may drop it
                self.known.discard(rid)
                self.missing_since.pop(rid, None)

    # -- TSO ----------------------------------------------------------------------------
    async def check_tso(self, t: float, fleet: Fleet) -> None:
        req = pdpb_pb2.TsoRequest(header=fleet.header(), count=1)
        call = fleet.stub.Tso(iter([req]))
        try:
            async for resp in call:
                if resp.header.HasField("error"):
                    return
                ts = (resp.timestamp.physical, resp.timestamp.logical)
                if ts <= self.last_ts:
                    self.fail(t, "TSO regression", f"{ts} after {self.last_ts}")
                self.last_ts = max(self.last_ts, ts)
                self.timestamps += 1
                return
        except Exception:  # PD restarting: no timestamp this tick, which is allowed
            return
        finally:
            call.cancel()
