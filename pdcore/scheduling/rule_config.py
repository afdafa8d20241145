"""Placement rules as PD's API edits them: rule groups, checked edits, PD's JSON.

PD's HTTP API writes rules one at a time, as lists, as batches of adds and deletes,
and as group bundles (a group with all its rules). Every write is an edit of the
whole rule set, checked as a whole before it takes effect: each rule on its own
(PD's rule content checks), then the key space (every key covered, at most one
leader and at least one leader or voter in force everywhere). A refused edit changes
nothing. `RuleSet.rules_in_force` is what scheduling gets: the rules with their
group's index and override folded in (see `rules.applied`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pdcore.domain.config import ReplicationConfig
from pdcore.scheduling.rules import OPS, ROLES, LabelConstraint, Rule, applied

RuleKey = tuple[str, str]  # (group id, rule id)


class RuleError(ValueError):
    """A write PD refuses, with PD's message and HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def content_error(what: str) -> RuleError:
    return RuleError(f"[PD:placement:ErrRuleContent]invalid rule content, {what}")


def build_error(what: str) -> RuleError:
    """PD answers a rule set that leaves part of the key space unserved with 500."""
    return RuleError(f"[PD:placement:ErrBuildRuleList]build rule list failed, {what}", 500)


@dataclass(frozen=True, slots=True)
class RuleGroup:
    id: str
    index: int = 0
    override: bool = False

    @property
    def is_default(self) -> bool:
        """A group PD does not keep: index 0, no override (what a rule's group is
        when nobody configured it)."""
        return self.index == 0 and not self.override


# -- PD's JSON ------------------------------------------------------------------------
def rule_to_json(r: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"group_id": r.group_id, "id": r.id}
    if r.index:
        out["index"] = r.index
    if r.override:
        out["override"] = True
    out.update(
        start_key=r.start_key.hex(),
        end_key=r.end_key.hex(),
        role=r.role,
        is_witness=False,
        count=r.count,
    )
    if r.label_constraints:
        out["label_constraints"] = [
            {"key": c.key, "op": c.op, "values": list(c.values)} for c in r.label_constraints
        ]
    if r.location_labels:
        out["location_labels"] = list(r.location_labels)
    if r.isolation_level:
        out["isolation_level"] = r.isolation_level
    return out


def group_to_json(g: RuleGroup) -> dict[str, Any]:
    out: dict[str, Any] = {"id": g.id}
    if g.index:
        out["index"] = g.index
    if g.override:
        out["override"] = True
    return out


def _typed(obj: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = obj.get(name)
    if value is None:
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RuleError(f"json: cannot unmarshal {type(value).__name__} into field {name}")
    return value


def _strings(obj: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _typed(obj, name, list, [])
    if not all(isinstance(v, str) for v in values):
        raise RuleError(f"json: cannot unmarshal a non-string into field {name}")
    return tuple(values)


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise RuleError(f"[PD:hex:ErrHexDecodingString]decode string {text} error") from None


def rule_from_json(obj: Any, group: str = "") -> Rule:
    """A rule from PD's JSON, with PD's checks of a rule on its own; `group`: the
    group the rule is written into (a bundle), filled in when the rule names none."""
    if not isinstance(obj, dict):
        raise RuleError("json: cannot unmarshal a rule from a non-object")
    start = _hex(_typed(obj, "start_key", str, ""))
    end = _hex(_typed(obj, "end_key", str, ""))
    if end and end <= start:
        raise content_error("endKey should be greater than startKey")
    group_id = _typed(obj, "group_id", str, "")
    if group:
        if not group_id:
            group_id = group
        elif group_id != group:
            raise content_error(f"rule group {group_id} does not match group ID {group}")
    if not group_id:
        raise content_error("group ID should not be empty")
    rule_id = _typed(obj, "id", str, "")
    if not rule_id:
        raise content_error("ID should not be empty")
    role = _typed(obj, "role", str, "")
    if role not in ROLES:
        raise content_error(f"invalid role {role}")
    count = _typed(obj, "count", int, 0)
    if count <= 0:
        raise content_error(f"invalid count {count}")
    if role == "leader" and count > 1:
        raise content_error(f"define multiple leaders by count {count}")
    if _typed(obj, "is_witness", bool, False):
        raise RuleError("kubepd does not place witness replicas")
    constraints = []
    for c in _typed(obj, "label_constraints", list, []):
        if not isinstance(c, dict):
            raise RuleError("json: cannot unmarshal a label constraint from a non-object")
        op = _typed(c, "op", str, "")
        if op not in OPS:
            raise content_error(f"invalid op {op}")
        constraints.append(LabelConstraint(_typed(c, "key", str, ""), op, _strings(c, "values")))
    return Rule(
        group_id=group_id,
        id=rule_id,
        index=_typed(obj, "index", int, 0),
        override=_typed(obj, "override", bool, False),
        start_key=start,
        end_key=end,
        role=role,
        count=count,
        label_constraints=tuple(constraints),
        location_labels=_strings(obj, "location_labels"),
        isolation_level=_typed(obj, "isolation_level", str, ""),
    )


def group_from_json(obj: Any) -> RuleGroup:
    if not isinstance(obj, dict):
        raise RuleError("json: cannot unmarshal a rule group from a non-object")
    return RuleGroup(
        _typed(obj, "id", str, ""),
        _typed(obj, "index", int, 0),
        _typed(obj, "override", bool, False),
    )


# -- the rule set and its edits -------------------------------------------------------
@dataclass(frozen=True)
class RuleSet:
    """Every rule by (group, id), and the groups someone configured (index or override
    set; the other groups exist only through their rules)."""

    rules: dict[RuleKey, Rule] = field(default_factory=dict)
    groups: dict[str, RuleGroup] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Iterable[Rule], groups: Iterable[RuleGroup] = ()) -> RuleSet:
        return cls(
            {(r.group_id, r.id): r for r in rules},
            {g.id: g for g in groups if not g.is_default},
        )

    def all_groups(self) -> list[RuleGroup]:
        """PD's rule groups: the configured ones and one for each group a rule names,
        by index then id."""
        groups = dict(self.groups)
        for gid, _ in self.rules:
            groups.setdefault(gid, RuleGroup(gid))
        return sorted(groups.values(), key=lambda g: (g.index, g.id))

    def group(self, gid: str) -> RuleGroup | None:
        return next((g for g in self.all_groups() if g.id == gid), None)

    def rules_in_force(self) -> list[Rule]:
        """The rules with their group's index and override, in PD's apply order."""
        out = []
        for r in self.rules.values():
            g = self.groups.get(r.group_id, RuleGroup(r.group_id))
            out.append(dataclasses.replace(r, group_index=g.index, group_override=g.override))
        return sorted(out, key=lambda r: r.order)

    def edit(self) -> RuleEdit:
        return RuleEdit(self)


class RuleEdit:
    """Changes to a rule set, applied in order; `commit` checks the result."""

    def __init__(self, base: RuleSet) -> None:
        self.base = base
        self.rules = dict(base.rules)
        self.groups = dict(base.groups)

    def set_rule(self, rule: Rule) -> None:
        self.rules[(rule.group_id, rule.id)] = rule

    def delete_rule(self, group: str, rule_id: str) -> None:
        self.rules.pop((group, rule_id), None)

    def delete_where(self, match: Callable[[Rule], bool]) -> None:
        """Delete the rules of the set the edit started from that `match` picks
        (PD's delete by id prefix looks at the rules in force, not at this batch)."""
        for key, r in self.base.rules.items():
            if match(r):
                self.rules.pop(key, None)

    def set_group(self, group: RuleGroup) -> None:
        if group.is_default:
            self.groups.pop(group.id, None)
        else:
            self.groups[group.id] = group

    def delete_group(self, gid: str) -> None:
        self.groups.pop(gid, None)

    def commit(self) -> RuleSet:
        out = RuleSet(self.rules, self.groups)
        check_key_space(out.rules_in_force())
        return out


def check_key_space(rules: list[Rule]) -> None:
    """PD's check of a whole rule set: every key range has a rule, and the rules in
    force there have at most one leader and at least one leader or voter."""
    if not rules:
        raise build_error("no rule left")
    bounds = sorted({b"", *(r.start_key for r in rules), *(r.end_key for r in rules if r.end_key)})
    for i, start in enumerate(bounds):
        end = bounds[i + 1] if i + 1 < len(bounds) else b""
        where = f"for range {{{start.hex().upper()}, {end.hex().upper()}}}"
        covering = [r for r in rules if r.covers_range(start, end)]
        if not covering:
            raise build_error(f"no rule {where}")
        leaders = voters = 0
        for r in applied(covering):
            if r.role == "leader":
                leaders += r.count
            elif r.role == "voter":
                voters += r.count
            if leaders > 1:
                raise build_error(f"multiple leader replicas {where}")
        if leaders + voters < 1:
            raise build_error(f"needs at least one leader or voter {where}")


NOT_ONLY_DEFAULT = (
    "cannot update MaxReplicas, LocationLabels or IsolationLevel when placement rules "
    "feature is enabled and not only default rule exists, please update rule instead"
)
INCONSISTENT = (
    "cannot to update replication config, the default rules do not consistent with "
    "replication config, please update rule instead"
)


def follow_replication(
    rules: RuleSet, old: ReplicationConfig, new: ReplicationConfig
) -> Rule | None:
    """PD keeps its default rule in step with the replication config: a change of
    max-replicas, location-labels or isolation-level rewrites `pd/default` (returned;
    None when none of them changed). PD refuses the change (RuleError) when that rule
    is gone, covers less than the whole key space, or no longer matches `old`."""

    def replication(c: ReplicationConfig) -> tuple[int, tuple[str, ...], str]:
        return (c.max_replicas, tuple(c.location_labels), c.isolation_level)

    if replication(old) == replication(new):
        return None
    rule = rules.rules.get(("pd", "default"))
    if rule is None or rule.start_key or rule.end_key:
        raise RuleError(NOT_ONLY_DEFAULT)
    if (rule.count, rule.location_labels, rule.isolation_level) != replication(old):
        raise RuleError(INCONSISTENT)
    return dataclasses.replace(
        rule,
        count=new.max_replicas,
        location_labels=tuple(new.location_labels),
        isolation_level=new.isolation_level,
    )


def matcher(pattern: str, regex: bool) -> Callable[[str], bool]:
    """PD's group match when deleting bundles: the id itself, or a regular expression
    (searched, as Go's MatchString does)."""
    if not regex:
        return lambda gid: gid == pattern
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise RuleError(f"error parsing regexp: {e}", 500) from None
    return lambda gid: compiled.search(gid) is not None
