"""The scenario cases, in the spirit of PD's simulator cases: a topology, events, a
success predicate judged on the simulated cluster's ground truth, and a time bound."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pdsim.fleet import Fleet
from pdsim.runner import Case, distribution

Check = tuple[bool, str]


def uniform(counts: dict[int, int], tolerance: float = 0.05) -> Check:
    if not counts:
        return False, "no stores"
    mean = sum(counts.values()) / len(counts)
    lo, hi = int((1 - tolerance) * mean), int((1 + tolerance) * mean + 0.999)
    bad = {s: n for s, n in counts.items() if not lo <= n <= hi}
    return (not bad), f"mean {mean:.0f}, allowed {lo}..{hi}, off: {bad or 'none'}"


# PD's tolerant resource for leader counts (tolerant-size-ratio 0 → 5 leaders). PD moves a
# leader only when source - 1 - 5 > target + 1 + 5 (the move's own influence counted on
# both sides), so stores within this spread of each other are balanced by PD's own rule.
LEADER_SPREAD_TOLERATED = 2 * (5 + 1)


def leaders_balanced(counts: dict[int, int], tolerance: float = 0.05) -> Check:
    """Within `tolerance` of the mean, or within PD's own leader tolerance of each other
    (for cases that keep PD's default tolerant-size-ratio)."""
    ok, detail = uniform(counts, tolerance)
    if ok or not counts:
        return ok, detail
    spread = max(counts.values()) - min(counts.values())
    return spread <= LEADER_SPREAD_TOLERATED, f"{detail}; spread {spread}"


def replicated(fleet: Fleet, replicas: int = 3) -> Check:
    short = [
        r.id
        for r in fleet.regions.values()
        if sum(
            1
            for p in r.peers
            if p.role == 0 and fleet.stores[p.store_id].up and not fleet.stores[p.store_id].removed
        )
        != replicas
        or len(r.peers) != replicas
    ]
    return (not short), f"{len(short)} regions without exactly {replicas} live voters"


def both(*checks: Check) -> Check:
    return all(c[0] for c in checks), "; ".join(c[1] for c in checks)


def round_robin(
    n: int, stores: int, replicas: int = 3, leader_offset: int = 0
) -> list[tuple[int, list[int]]]:
    out = []
    for i in range(n):
        peers = [(i + j) % stores for j in range(replicas)]
        out.append((peers[leader_offset % replicas], peers))
    return out


def zones(n: int, per_zone: int = 1) -> list[dict[str, str]]:
    return [{"zone": f"z{i // per_zone + 1}", "host": f"h{i + 1}"} for i in range(n)]


def live(fleet: Fleet) -> dict[str, dict[int, int]]:
    d = distribution(fleet)
    ups = {sid for sid, s in fleet.stores.items() if s.up and not s.removed}
    return {k: {s: n for s, n in v.items() if s in ups} for k, v in d.items()}


# -- the cases ------------------------------------------------------------------------------------
def balance_leader() -> Case:
    n, s = 400, 4
    layout = [(s - 1, [s - 1, i % (s - 1), (i + 1) % (s - 1)]) for i in range(n)]
    return Case(
        "balance-leader",
        "all leaders start on the last store; they spread evenly",
        zones(s),
        layout,
        lambda f: leaders_balanced(live(f)["leaders"]),
        bound_s=900,
    )


def add_nodes() -> Case:
    n = 300
    layout = round_robin(n, 3)
    return Case(
        "add-nodes",
        "two empty stores join three full ones; regions and leaders spread",
        zones(5),
        layout,
        lambda f: both(uniform(live(f)["peers"]), uniform(live(f)["leaders"], 0.1), replicated(f)),
        bound_s=3600,
        # PD tolerates 5 leaders of gap by default; 60 leaders a store need a tighter one
        # for the 10 % leader check.
        schedule={
            "store_limit_add_peer": 60.0,
            "store_limit_remove_peer": 60.0,
            "tolerant_size_ratio": 2.0,
        },
    )


def add_nodes_dynamic() -> Case:
    n = 300

    async def add(f: Fleet) -> None:
        await f.add_store({"zone": f"z{len(f.stores) + 1}", "host": f"h{len(f.stores) + 1}"})

    return Case(
        "add-nodes-dynamic",
        "stores join one at a time while PD balances",
        zones(3),
        round_robin(n, 3),
        lambda f: both(uniform(live(f)["peers"]), uniform(live(f)["leaders"], 0.1), replicated(f)),
        bound_s=3600,
        events=[(30.0, add), (120.0, add)],
        # PD tolerates 5 leaders of gap by default; 60 leaders a store need a tighter one
        # for the 10 % leader check.
        schedule={
            "store_limit_add_peer": 60.0,
            "store_limit_remove_peer": 60.0,
            "tolerant_size_ratio": 2.0,
        },
    )


def delete_nodes() -> Case:
    n = 300

    async def remove(f: Fleet) -> None:
        await f.remove_store(max(f.stores))

    def pred(f: Fleet) -> Check:
        victim = max(f.stores)
        on_victim = sum(1 for r in f.regions.values() if r.peer_on(victim))
        return both(
            (on_victim == 0, f"{on_victim} peers left on store {victim}"),
            replicated(f),
            uniform({s: n for s, n in live(f)["peers"].items() if s != victim}),
        )

    return Case(
        "delete-nodes",
        "a store is taken offline; its replicas move and it becomes tombstone",
        zones(5),
        round_robin(n, 5),
        pred,
        bound_s=3600,
        events=[(10.0, remove)],
        schedule={"store_limit_add_peer": 60.0, "store_limit_remove_peer": 60.0},
    )


def region_split() -> Case:
    def prepare(f: Fleet) -> None:
        r = next(iter(f.regions.values()))
        r.size_mib = 1
        r.write_rate = 8 * (1 << 20) / 60  # grows ~8 MiB per heartbeat interval

    def pred(f: Fleet) -> Check:
        peers = live(f)["peers"]
        return (
            all(n >= 5 for n in peers.values()) and len(f.regions) >= 8,
            f"{len(f.regions)} regions, peers per store {peers}",
        )

    return Case(
        "region-split",
        "one region under writes splits; the pieces spread over 4 stores",
        zones(4),
        [(0, [0, 1, 2])],
        pred,
        bound_s=3600,
        size_mib=1,
        prepare=prepare,
        settle_s=60.0,
    )


MERGE_SCHEDULE = {"split_merge_interval_s": 0.0, "merge_schedule_limit": 16}


def _merging(stores: int) -> Case:
    """300 small regions on 3 stores merge into at most a third as many; with more
    stores than 3, the empty ones take their share while the merges run, so merges meet
    neighbours on other stores and regions whose peers are moving."""
    n = 300
    balancing = stores > 3

    def pred(f: Fleet) -> Check:
        checks = [
            (len(f.regions) <= n // 3, f"{len(f.regions)} regions (want <= {n // 3})"),
            replicated(f),
        ]
        if balancing:
            checks.append(uniform(live(f)["peers"], 0.2))
        return both(*checks)

    limits = {"store_limit_add_peer": 60.0, "store_limit_remove_peer": 60.0}
    return Case(
        "merge-while-balancing" if balancing else "region-merge",
        f"300 small regions on 3 stores merge while {stores - 3} empty stores take their share"
        if balancing
        else "300 small regions merge into fewer, larger ones",
        zones(stores),
        round_robin(n, 3),
        pred,
        bound_s=3600 if balancing else 1800,
        size_mib=10,
        schedule={**MERGE_SCHEDULE, **(limits if balancing else {})},
    )


def _hot(kind: str) -> Case:
    n, s = 200, 4
    layout = round_robin(n, s)
    hot_ids: list[int] = []

    def prepare(f: Fleet) -> None:
        first = f.stores[min(f.stores)].id
        picked = [r for r in f.regions.values() if r.peer_on(first)][: (8 if kind == "read" else 6)]
        for r in picked:
            p = r.peer_on(first)
            assert p is not None
            r.leader_id = p.id
            if kind == "read":
                r.read_rate = 16 * (1 << 20)
            else:
                r.write_rate = 1 << 20
            hot_ids.append(r.id)
            f.heartbeat(r)

    def pred(f: Fleet) -> Check:
        hot = [f.regions[i] for i in hot_ids if i in f.regions]
        leaders = Counter(r.leader_store for r in hot)
        peers = Counter(p.store_id for r in hot for p in r.peers)
        lc = [leaders.get(sid, 0) for sid in f.stores]
        pc = [peers.get(sid, 0) for sid in f.stores]
        if kind == "read":
            return max(lc) - min(lc) < 2, f"hot leaders per store {lc}"
        return (
            max(lc) - min(lc) <= 2 and max(pc) - min(pc) <= 2,
            f"hot leaders per store {lc}, hot peers per store {pc}",
        )

    return Case(
        f"hot-{kind}",
        f"hot {kind} regions all led by one store get spread",
        zones(s),
        layout,
        pred,
        bound_s=1800,
        prepare=prepare,
        settle_s=30.0,
        schedule={"store_limit_add_peer": 60.0, "store_limit_remove_peer": 60.0},
    )


def peer_moves(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]) -> int:
    """Replicas that had to be rebuilt somewhere (leaders move by election when a store dies)."""
    return sum(max(0, n - before["peers"].get(s, 0)) for s, n in after["peers"].items())


def makeup_down_replicas() -> Case:
    n = 300

    async def kill(f: Fleet) -> None:
        f.stop_store(max(f.stores))

    def pred(f: Fleet) -> Check:
        dead = max(f.stores)
        on_dead = sum(1 for r in f.regions.values() if r.peer_on(dead))
        return both(
            (on_dead == 0, f"{on_dead} replicas still on the dead store"),
            replicated(f),
            uniform(live(f)["peers"]),
        )

    return Case(
        "makeup-down-replicas",
        "a store dies; after max-store-down-time its replicas are rebuilt",
        zones(4),
        round_robin(n, 4),
        pred,
        bound_s=3600,
        events=[(5.0, kill)],
        schedule={
            "max_store_down_time_s": 60.0,
            "store_limit_add_peer": 60.0,
            "store_limit_remove_peer": 60.0,
        },
        min_moves=peer_moves,
    )


def label_isolation() -> Case:
    n = 240
    labels = zones(6, per_zone=2)  # z1: stores 0,1  z2: 2,3  z3: 4,5
    layout = [
        ((i % 2), [i % 2, (i % 2) + 2 if i % 3 else (i + 1) % 2, 4 + i % 2]) for i in range(n)
    ]

    def pred(f: Fleet) -> Check:
        zone_of = {sid: s.labels["zone"] for sid, s in f.stores.items()}
        bad = [
            r.id
            for r in f.regions.values()
            if len({zone_of[p.store_id] for p in r.peers}) != len(r.peers)
        ]
        return both((not bad, f"{len(bad)} regions with two replicas in one zone"), replicated(f))

    return Case(
        "label-isolation",
        "replicas sharing a zone are moved apart (location-labels=[zone])",
        labels,
        layout,
        pred,
        bound_s=3600,
        replication={"location_labels": ("zone",)},
        schedule={"store_limit_add_peer": 60.0, "store_limit_remove_peer": 60.0},
    )


def redundant_balance_region() -> Case:
    n = 300

    def prepare(f: Fleet) -> None:
        for i, s in enumerate(sorted(f.stores)):
            if i % 2:
                f.stores[s].extra_used = 400 << 30  # odd stores hold other data

    def pred(f: Fleet) -> Check:
        quiet = f.now() - f.settled_since
        return quiet >= 60.0, f"no new operator for {quiet:.0f} s"

    return Case(
        "redundant-balance-region",
        "stores with other data: PD settles and stops moving",
        zones(4),
        round_robin(n, 4),
        pred,
        bound_s=1800,
        settle_s=30.0,
        prepare=prepare,
    )


IMPORT_S = 1200.0  # sim seconds the import writes for: 4 x 16 MiB/min, 1.25 GiB in all


def import_data() -> Case:
    n = 60
    table: list[bytes] = []

    def prepare(f: Fleet) -> None:
        rs = sorted(f.regions.values(), key=lambda r: r.start)[20:24]  # "table 12"
        for r in rs:
            r.write_rate = 16 * (1 << 20) / 60
            r.size_mib = 32
        table[:] = [rs[0].start, rs[-1].end]
        f.scatter_ranges.append((rs[0].start, rs[-1].end, "table-12"))

        def finished() -> None:  # the import is a fixed amount of data (~1.3 GiB)
            for r in f.regions.values():
                r.write_rate = 0.0

        f.at(IMPORT_S, finished)

    def pred(f: Fleet) -> Check:
        lo, hi = table
        mine = [r for r in f.regions.values() if lo <= r.start and r.end and r.end <= hi]
        peers = Counter(p.store_id for r in mine for p in r.peers)
        counts = {sid: peers.get(sid, 0) for sid in f.stores}
        return both(
            # 4 regions of 32 MiB grow by 1.25 GiB and split at 96 MiB: 16 or more.
            (len(mine) >= 16, f"{len(mine)} table regions"),
            uniform(counts, 0.25),
            replicated(f),
        )

    return Case(
        "import-data",
        "an import splits one table's regions; the new regions are scattered",
        zones(4),
        [(0, [0, 1, 2]) for _ in range(n)],
        pred,
        bound_s=3600,
        size_mib=32,
        prepare=prepare,
        settle_s=300.0,
        schedule={"store_limit_add_peer": 60.0, "store_limit_remove_peer": 60.0},
    )


def stable_env() -> Case:
    n = 400

    def pred(f: Fleet) -> Check:
        moved = f.stats.applied.get("add-learner", 0) + f.stats.applied.get("transfer-leader", 0)
        return moved == 0, f"{moved} moves in a balanced cluster"

    def no_moves(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]) -> int:
        return 0

    return Case(
        "stable-env",
        "a balanced cluster: PD must not move anything",
        zones(4),
        round_robin(n, 4),
        pred,
        bound_s=200,
        settle_s=0.0,
        hold_s=120.0,
        min_moves=no_moves,
    )


# Each factory builds a fresh copy of its case (cases keep per-run state in closures).
FACTORIES: dict[str, Callable[[], Case]] = {
    "add-nodes": add_nodes,
    "add-nodes-dynamic": add_nodes_dynamic,
    "delete-nodes": delete_nodes,
    "region-split": region_split,
    "region-merge": lambda: _merging(3),
    "merge-while-balancing": lambda: _merging(5),
    "hot-write": lambda: _hot("write"),
    "hot-read": lambda: _hot("read"),
    "makeup-down-replicas": makeup_down_replicas,
    "label-isolation": label_isolation,
    "balance-leader": balance_leader,
    "redundant-balance-region": redundant_balance_region,
    "import-data": import_data,
    "stable-env": stable_env,
}
CASES = {name: make() for name, make in FACTORIES.items()}


def get(name: str) -> Case:
    """A fresh copy of a case."""
    if name not in FACTORIES:
        raise KeyError(f"unknown case {name!r}; run `kubepd simulate --list`")
    return FACTORIES[name]()
