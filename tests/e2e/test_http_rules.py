"""Placement-rule writes over PD's HTTP API in the embedded mode: each route as PD
answers it, PD's errors for bad input (and nothing changed), rules durable across a
restart and in force for scheduling; on a host without a rule keeper (Kubernetes)
writes are refused with the kubectl hint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pdcore.adapters.http.scheduling_api import add_scheduling_routes
from pdcore.app import PdServer
from tests.e2e.conftest import running_server
from tests.support.http_api import DEFAULT_RULE, call

CONTENT = "[PD:placement:ErrRuleContent]invalid rule content, "
BUILD = "[PD:placement:ErrBuildRuleList]build rule list failed, "
DEFAULT = DEFAULT_RULE


def rule(group: str = "pd", rid: str = "r1", **fields: Any) -> dict[str, Any]:
    return {**DEFAULT, "group_id": group, "id": rid, **fields}


def config_api(server: PdServer) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(f"http://{server.status_address}/pd/api/v1/config/")


@pytest.fixture
async def http(server: PdServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with config_api(server) as s:
        yield s


async def rules(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = await call(http, "GET", "rules")
    return out


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"count": 0}, CONTENT + "invalid count 0"),
        ({"role": "witness"}, CONTENT + "invalid role witness"),
        ({"role": "leader", "count": 2}, CONTENT + "define multiple leaders by count 2"),
        ({"group_id": ""}, CONTENT + "group ID should not be empty"),
        ({"id": ""}, CONTENT + "ID should not be empty"),
        ({"start_key": "zz"}, "[PD:hex:ErrHexDecodingString]decode string zz error"),
        ({"start_key": "62", "end_key": "61"}, CONTENT + "endKey should be greater than startKey"),
        ({"start_key": "61", "end_key": "61"}, CONTENT + "endKey should be greater than startKey"),
        (
            {"label_constraints": [{"key": "zone", "op": "equals", "values": ["a"]}]},
            CONTENT + "invalid op equals",
        ),
    ],
)
async def test_a_bad_rule_is_refused_with_pds_message(
    http: aiohttp.ClientSession, fields: dict[str, Any], message: str
) -> None:
    assert await call(http, "POST", "rule", rule(**fields), status=400) == message
    assert (
        await call(http, "POST", "rules", [rule("g", "ok"), rule(**fields)], status=400) == message
    )
    assert await rules(http) == [DEFAULT]


async def test_set_get_and_delete_one_rule(server: PdServer, http: aiohttp.ClientSession) -> None:
    five = rule(rid="default", count=5, location_labels=["zone"])
    assert await call(http, "POST", "rule", five) == "Update rule successfully."
    assert await call(http, "GET", "rule/pd/default") == five
    assert [r.count for r in server.scheduler.scheduling.coordinator.rules()] == [5]  # type: ignore[union-attr]
    learner = rule("tiflash", "l", role="learner", count=1, start_key="61", end_key="62")
    await call(http, "POST", "rule", learner)
    assert await rules(http) == [five, learner]  # group order: pd before tiflash
    assert await call(http, "GET", "rules/group/tiflash") == [learner]
    assert await call(http, "GET", "rule/tiflash/nope", status=404) == (
        "[PD:placement:ErrRuleNotFound]rule not found"
    )
    assert await call(http, "DELETE", "rule/tiflash/l") == "Delete rule successfully."
    # The last voter rule cannot go: PD answers 500, and nothing changes.
    assert await call(http, "DELETE", "rule/pd/default", status=500) == BUILD + "no rule left"
    assert await rules(http) == [five]
    assert await call(http, "DELETE", "rule/pd/absent") == "Delete rule successfully."


async def test_every_key_needs_a_voter_and_at_most_one_leader(
    http: aiohttp.ClientSession,
) -> None:
    # Replacing the default rule with one on [a, b) leaves the rest of the keys bare.
    ops = [
        {"action": "del", "group_id": "pd", "id": "default"},
        {"action": "add", **rule(start_key="61", end_key="62")},
    ]
    assert await call(http, "POST", "rules/batch", ops, status=500) == (
        BUILD + "no rule for range {, 61}"
    )
    learner_only = [{"group_id": "pd", "rules": [rule(role="learner", count=1)]}]
    assert await call(http, "POST", "placement-rule", learner_only, status=500) == (
        BUILD + "needs at least one leader or voter for range {, }"
    )
    two_leaders = [rule("a", "l", role="leader", count=1), rule("b", "l", role="leader", count=1)]
    assert await call(http, "POST", "rules", two_leaders, status=500) == (
        BUILD + "multiple leader replicas for range {, }"
    )
    assert await rules(http) == [DEFAULT]


async def test_batch_adds_and_deletes_by_id_prefix(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "rules", [rule("t", "table-1"), rule("t", "table-2"), rule("t", "x")])
    ops = [
        {"action": "del", "group_id": "t", "id": "table-", "delete_by_id_prefix": True},
        {"action": "add", **rule("t", "table-3")},  # added after: the prefix delete keeps it
        {"action": "del", "group_id": "pd", "id": "default"},
    ]
    assert await call(http, "POST", "rules/batch", ops) == "Batch operations successfully."
    assert [(r["group_id"], r["id"]) for r in await rules(http)] == [("t", "table-3"), ("t", "x")]
    bad = [{"action": "del", "group_id": "t", "id": "x"}, {"action": "add", **rule(count=-1)}]
    assert await call(http, "POST", "rules/batch", bad, status=400) == CONTENT + "invalid count -1"
    assert len(await rules(http)) == 2


async def test_rule_groups_order_and_override(
    server: PdServer, http: aiohttp.ClientSession
) -> None:
    await call(http, "POST", "rule", rule("tidb", "five", count=5))
    assert await call(http, "GET", "rule_groups") == [{"id": "pd"}, {"id": "tidb"}]
    assert await call(http, "GET", "rule_group/nope", status=404) is None
    # An overriding group sets aside every group before it: only its rule is in force.
    group = {"id": "tidb", "index": 2, "override": True}
    assert await call(http, "POST", "rule_group", group) == "Update rule group successfully."
    assert await call(http, "GET", "rule_group/tidb") == group
    coordinator = server.scheduler.scheduling.coordinator  # type: ignore[union-attr]
    in_force = [(r.group_id, r.group_index, r.group_override) for r in coordinator.rules()]
    assert in_force == [("pd", 0, False), ("tidb", 2, True)]
    bundles = await call(http, "GET", "placement-rule")
    assert [(b["group_id"], b["group_index"], b["group_override"]) for b in bundles] == [
        ("pd", 0, False),
        ("tidb", 2, True),
    ]
    assert await call(http, "DELETE", "rule_group/tidb") == "Delete rule group successfully."
    assert await call(http, "GET", "rule_group/tidb") == {"id": "tidb"}  # its rule keeps it
    # A configured group without rules stays; one at PD's defaults is not kept.
    await call(http, "POST", "rule_group", {"id": "empty", "index": 7})
    await call(http, "POST", "rule_group", {"id": "plain"})
    groups = await call(http, "GET", "rule_groups")
    assert groups == [{"id": "pd"}, {"id": "tidb"}, {"id": "empty", "index": 7}]
    assert await call(http, "GET", "placement-rule/empty") == {
        "group_id": "empty",
        "group_index": 7,
        "group_override": False,
        "rules": None,
    }


async def test_bundles_replace_all_partial_one_and_delete(http: aiohttp.ClientSession) -> None:
    tidb = {
        "group_id": "tidb",
        "group_index": 3,
        "group_override": True,
        "rules": [rule("", "t1", count=2)],  # the bundle's group fills in the rule's
    }
    assert await call(http, "POST", "placement-rule", [tidb]) == (
        "Update rules and groups successfully."
    )
    got = await call(http, "GET", "placement-rule")
    assert got == [{**tidb, "rules": [rule("tidb", "t1", count=2)]}]  # pd's default: replaced
    # partial: only the groups named are replaced.
    pd = {"group_id": "pd", "group_index": 0, "group_override": False, "rules": [DEFAULT]}
    await call(http, "POST", "placement-rule?partial", [pd])
    assert [b["group_id"] for b in await call(http, "GET", "placement-rule")] == ["pd", "tidb"]
    # One bundle by its path; the body's group id must match it.
    one = {"group_id": "tiflash", "group_index": 9, "rules": [rule("", "l", role="learner")]}
    assert await call(http, "POST", "placement-rule/tiflash", one) == (
        "Update group and rules successfully."
    )
    assert await call(http, "POST", "placement-rule/other", one, status=400) == (
        "group id tiflash does not match request URI other"
    )
    wrong = {"rules": [rule("pd", "x")]}
    assert await call(http, "POST", "placement-rule/tiflash", wrong, status=400) == (
        CONTENT + "rule group pd does not match group ID tiflash"
    )
    assert (await call(http, "GET", "placement-rule/tiflash"))["rules"][0]["id"] == "l"
    assert await call(http, "DELETE", "placement-rule/ti.*?regexp") == (
        "Delete group and rules successfully."
    )
    assert [b["group_id"] for b in await call(http, "GET", "placement-rule")] == ["pd"]


async def test_bad_json_is_refused(http: aiohttp.ClientSession) -> None:
    async with http.post("rule", data=b"{not json") as resp:
        assert resp.status == 400
    assert "non-array" in await call(http, "POST", "rules", {"id": "x"}, status=400)
    assert "unmarshal" in await call(http, "POST", "rule", {**DEFAULT, "count": "3"}, status=400)
    assert await rules(http) == [DEFAULT]


async def test_rules_survive_a_restart(tmp_path: Path) -> None:
    written = [rule(rid="default", count=5), rule("tidb", "t", role="learner", count=1)]
    async with running_server(tmp_path, name="pd-rules") as srv, config_api(srv) as s:
        await call(s, "POST", "rules", written)
        await call(s, "POST", "rule_group", {"id": "tidb", "index": 4})
    async with running_server(tmp_path, name="pd-rules") as srv:
        async with config_api(srv) as s:
            assert await rules(s) == written
            assert await call(s, "GET", "rule_group/tidb") == {"id": "tidb", "index": 4}
        coordinator = srv.scheduler.scheduling.coordinator  # type: ignore[union-attr]
        assert [(r.id, r.count, r.group_index) for r in coordinator.rules()] == [
            ("default", 5, 0),
            ("t", 1, 4),
        ]


async def test_the_default_rule_and_max_replicas_stay_in_step(
    server: PdServer, http: aiohttp.ClientSession
) -> None:
    async with aiohttp.ClientSession(f"http://{server.status_address}/pd/api/v1/") as api:

        async def max_replicas() -> int:
            return int((await call(api, "GET", "config/replicate"))["max-replicas"])

        # Before any write the default rule is the replication config's.
        await call(api, "POST", "config/replicate", {"max-replicas": 5})
        assert (await rules(http))[0]["count"] == 5
        await call(http, "POST", "rule", rule("tidb", "t", role="learner", count=1))
        # Once rules are written, a change of max-replicas rewrites pd/default ...
        await call(api, "POST", "config", {"max-replicas": 4, "location-labels": "zone"})
        assert [(r["count"], r.get("location_labels")) for r in await rules(http)] == [
            (4, ["zone"]),
            (1, None),
        ]
        # ... and writing pd/default sets max-replicas, as PD does.
        await call(http, "POST", "rule", rule(rid="default", count=2, location_labels=["zone"]))
        assert await max_replicas() == 2
        # Without pd/default over the whole key space, PD refuses the change.
        await call(http, "POST", "rule", rule(rid="other"))
        await call(http, "DELETE", "rule/pd/default")
        refused = await call(api, "POST", "config/replicate", {"max-replicas": 3}, status=400)
        assert refused.startswith("cannot update MaxReplicas, LocationLabels or IsolationLevel")
        assert await max_replicas() == 2
        # A rule write that PD refuses leaves max-replicas alone too.
        await call(http, "POST", "rule", rule(rid="default", count=0), status=400)
        assert await max_replicas() == 2


async def test_without_a_rule_keeper_writes_are_refused(server: PdServer) -> None:
    """As on Kubernetes, where PlacementRule objects are the rules."""
    app = web.Application()
    add_scheduling_routes(app, server.scheduler.scheduling)  # type: ignore[union-attr]
    async with TestServer(app) as ts, aiohttp.ClientSession(str(ts.make_url("/"))) as s:
        base = "pd/api/v1/config/"
        for method, path, body in [
            ("POST", "rule", rule(count=1)),
            ("POST", "rules", [rule()]),
            ("POST", "rules/batch", []),
            ("POST", "rule_group", {"id": "x"}),
            ("POST", "placement-rule", []),
            ("POST", "placement-rule/pd", {}),
            ("DELETE", "rule/pd/default", None),
            ("DELETE", "rule_group/pd", None),
            ("DELETE", "placement-rule/pd", None),
        ]:
            assert "PlacementRule" in await call(s, method, base + path, body, status=400)
        assert await call(s, "GET", base + "rules") == [DEFAULT]
