"""The "prepared" gate: a new holder of the scheduler role schedules only once its region
view has caught up, by PD's rule (its prepareChecker):

* prepared once at least COLLECT_FACTOR (90%) of all regions, and of the regions on
  every Up store, were heard live — from a heartbeat, or from the pd-leader's region
  sync — rather than only loaded from storage or a local snapshot;
* or once COLLECT_TIMEOUT_S (5 minutes) have passed since the role was taken;
* and, once prepared, it stays so until the role is lost.

The checker is pure: the service tells it which regions were heard and asks it with
the view and the time.
"""

from __future__ import annotations

from pdcore.scheduling.cluster import ClusterView

COLLECT_FACTOR = 0.9
COLLECT_TIMEOUT_S = 300.0


class PrepareChecker:
    def __init__(self) -> None:
        self.heard: set[int] = set()  # region ids heard live (kept across role changes)
        self.since: float | None = None  # when the role was taken; None: not held
        self.prepared = False
        self.reason = "the scheduler role is not held"

    def heard_from(self, region_id: int) -> None:
        self.heard.add(region_id)

    def taken(self, now: float) -> None:
        self.since, self.prepared = now, False
        self.reason = "the region view has not been checked yet"

    def lost(self) -> None:
        self.since, self.prepared = None, False
        self.reason = "the scheduler role is not held"

    def check(self, view: ClusterView, now: float) -> bool:
        if self.prepared:
            return True
        if self.since is None:
            return False
        if now - self.since >= COLLECT_TIMEOUT_S:
            return self._done()
        total = heard = 0
        per_store: dict[int, list[int]] = {}  # store -> [regions, heard]
        up = {s.id for s in view.stores() if s.is_up}
        for region in view.tree:
            fresh = region.id in self.heard
            total += 1
            heard += fresh
            for sid in region.store_ids & up:
                counts = per_store.setdefault(sid, [0, 0])
                counts[0] += 1
                counts[1] += fresh
        waited = now - self.since
        if total * COLLECT_FACTOR > heard:
            self.reason = self._waiting(f"{heard} of {total} regions", waited)
            return False
        for sid, (n, live) in sorted(per_store.items()):
            if n * COLLECT_FACTOR > live:
                self.reason = self._waiting(f"store {sid}: {live} of its {n} regions", waited)
                return False
        return self._done()

    def _done(self) -> bool:
        self.prepared, self.reason = True, ""
        return True

    @staticmethod
    def _waiting(what: str, waited: float) -> str:
        return (
            f"waiting for the region view to catch up after taking the scheduler role: "
            f"{what} heard since (needs {COLLECT_FACTOR:.0%}, or {COLLECT_TIMEOUT_S:.0f}s; "
            f"{waited:.0f}s so far)"
        )
