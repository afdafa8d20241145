"""Placement rules: how many replicas of which role go on which stores.

A rule says "`count` peers with `role`, on stores whose labels match the constraints,
spread over `location_labels`". With no explicit rules, the default rule is
`max-replicas` voters spread over `location-labels` (PD's default rule). `fit` matches
a region's peers to its rules and says what is missing and what is extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pdcore.domain.config import ReplicationConfig
from pdcore.domain.region import Peer, Region
from pdcore.domain.store import Store

ROLES = ("voter", "leader", "follower", "learner")
OPS = ("in", "notIn", "exists", "notExists")


@dataclass(frozen=True, slots=True)
class LabelConstraint:
    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, store: Store) -> bool:
        value = store.label(self.key)
        if self.op == "in":
            return value in self.values
        if self.op == "notIn":
            return value not in self.values
        if self.op == "exists":
            return bool(value)
        return not value


@dataclass(frozen=True, slots=True)
class Rule:
    group_id: str = "pd"
    id: str = "default"
    index: int = 0
    override: bool = False
    start_key: bytes = b""
    end_key: bytes = b""
    role: str = "voter"
    count: int = 3
    label_constraints: tuple[LabelConstraint, ...] = ()
    location_labels: tuple[str, ...] = ()
    isolation_level: str = ""
    # From the rule's group (PD's rule groups): the group's place in the apply order,
    # and whether it sets aside every group before it.
    group_index: int = 0
    group_override: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"rule {self.group_id}/{self.id}: role must be one of {ROLES}")
        if self.count <= 0:
            raise ValueError(f"rule {self.group_id}/{self.id}: count must be positive")
        if self.end_key and self.start_key >= self.end_key:
            raise ValueError(f"rule {self.group_id}/{self.id}: start key is not below end key")
        for c in self.label_constraints:
            if c.op not in OPS:
                raise ValueError(f"rule {self.group_id}/{self.id}: label op must be one of {OPS}")

    @property
    def wants_learner(self) -> bool:
        return self.role == "learner"

    def store_ok(self, store: Store) -> bool:
        return all(c.matches(store) for c in self.label_constraints)

    def covers(self, region: Region) -> bool:
        return self.covers_range(region.start_key, region.end_key)

    def covers_range(self, start: bytes, end: bytes) -> bool:
        """Whether [start, end) lies inside the rule's range (an empty end: no bound)."""
        if self.start_key > start:
            return False
        if not self.end_key:
            return True
        return bool(end) and end <= self.end_key

    @property
    def order(self) -> tuple[int, str, int, str]:
        """PD's apply order: group index, group id, rule index, rule id."""
        return (self.group_index, self.group_id, self.index, self.id)


def default_rules(repl: ReplicationConfig) -> list[Rule]:
    return [
        Rule(
            count=repl.max_replicas,
            location_labels=repl.location_labels,
            isolation_level=repl.isolation_level,
        )
    ]


def rules_for(region: Region, rules: list[Rule]) -> list[Rule]:
    return applied([r for r in rules if r.covers(region)])


def applied(covering: list[Rule]) -> list[Rule]:
    """Of the rules covering one range, those in force, in apply order: a rule with
    `override` sets aside the rules before it in its group, a group with
    `group_override` every group before it."""
    out: list[Rule] = []
    group: str | None = None
    for r in sorted(covering, key=lambda r: r.order):
        if r.group_id != group:
            group = r.group_id
            if r.group_override:
                out = []
        if r.override:
            out = [x for x in out if x.group_id != r.group_id]
        out.append(r)
    return out


@dataclass
class RuleFit:
    rule: Rule
    peers: list[Peer] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, self.rule.count - len(self.peers))


@dataclass
class RegionFit:
    fits: list[RuleFit]
    orphans: list[Peer]

    @property
    def satisfied(self) -> bool:
        return self.shortfall == 0

    @property
    def shortfall(self) -> int:
        """How far from its rules the region is: missing replicas, replicas no rule
        wants, and replicas in the wrong role."""
        wrong_role = sum(
            1
            for f in self.fits
            for p in f.peers
            if not (p.is_learner if f.rule.wants_learner else p.is_voter)
        )
        return sum(f.missing for f in self.fits) + len(self.orphans) + wrong_role


def fit(region: Region, rules: list[Rule], stores: dict[int, Store]) -> RegionFit:
    """Greedy matching: leader rules first, then voters/followers, then learners; a peer
    serves at most one rule; peers matching no rule are orphans."""
    order = {"leader": 0, "voter": 1, "follower": 1, "learner": 2}
    left = list(region.peers)
    fits: list[RuleFit] = []
    for rule in sorted(rules, key=lambda r: order[r.role]):
        rf = RuleFit(rule)
        # Prefer peers already in the right role, then healthy ones.
        cands = [p for p in left if (s := stores.get(p.store_id)) is not None and rule.store_ok(s)]
        if rule.role == "leader":
            cands = [p for p in cands if region.leader and p.id == region.leader.id] or cands
        cands.sort(key=lambda p: (p.is_learner != rule.wants_learner, region.is_down(p)))
        for p in cands[: rule.count]:
            rf.peers.append(p)
            left.remove(p)
        fits.append(rf)
    return RegionFit(fits, left)


def move_keeps_rules(
    region: Region, source: int, target: int, rules: list[Rule], stores: dict[int, Store]
) -> bool:
    """PD's placement safeguard: moving the replica on `source` to `target` must not
    leave the region further from its rules than it is now."""
    moved = region.with_(
        peers=tuple(Peer(p.id, target, p.role) if p.store_id == source else p for p in region.peers)
    )
    before = fit(region, rules_for(region, rules), stores).shortfall
    return fit(moved, rules_for(moved, rules), stores).shortfall <= before
