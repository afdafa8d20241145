"""PD's Go HTTP client (github.com/tikv/pd/client/http, the version pinned in
gohttp/go.mod) against a real `kubepd serve`: every call it makes must succeed and
decode into PD's types, and the values must be the ones kubepd holds. Twice: pointed at
the status URL, and finding PD as users' programs do, by gRPC discovery on the client
URL and then HTTP/1.1 on that same port (where `cluster`, `health` and the service GC
safe points used to hang: the client spoke HTTP/2 to an HTTP/1.1-only port). With
-rule-writes it also writes placement rules (SetPlacementRule, SetPlacementRuleInBatch,
SetPlacementRuleGroup, SetPlacementRuleBundles, DeletePlacementRule, ...), which the
embedded mode takes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.gobuild import build_pdhttp
from tests.conformance.test_go_client import bootstrap_two_regions
from tests.support.pdproc import PdProcess

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pdhttp() -> Path:
    return build_pdhttp()


def run_pdhttp(
    pdhttp: Path, ids: dict[str, int], where: list[str], *extra: str
) -> dict[str, dict[str, Any]]:
    """Every call's result, by name; `where`: -url (and -discover), `extra`: more
    flags, e.g. TLS."""
    res = subprocess.run(
        [
            str(pdhttp),
            *where,
            "-store",
            str(ids["s1"]),
            "-store2",
            str(ids["s2"]),
            "-region",
            str(ids["r1"]),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # The client logs to stdout too; the report is the one JSON object line.
    line = next(ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{"))
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize("port", ["status", "client"])
def test_pd_go_http_client(pdhttp: Path, pd: PdProcess, port: str) -> None:
    ids = bootstrap_two_regions(pd)
    where = (
        ["-url", pd.status] if port == "status" else ["-discover", "-url", f"http://{pd.address}"]
    )
    out = run_pdhttp(pdhttp, ids, where, "-rule-writes")
    expected_errors = {"store_missing", "region_missing", "set_config_bad", "rule_set_bad"}
    failed = {k: v["err"] for k, v in out.items() if not v["ok"] and k not in expected_errors}
    assert failed == {}
    v = {k: r.get("value") for k, r in out.items()}
    assert v["members"] == {"count": 1, "leader": "pd-conf"} and v["leader"] == "pd-conf"
    assert v["health"][0]["health"] is True
    assert (
        v["version"] == v["status"]["version"] == "v8.5.0"
        and v["cluster"] == 3
        and v["cluster_status"]["is_initialized"] is True
    )
    assert v["stores"]["count"] == 2 and v["stores"]["first_state"] == "Up"
    assert v["store"]["store"]["id"] == ids["s1"]
    assert (
        "404" in out["store_missing"]["err"] and "ErrStoreNotFound" in out["store_missing"]["err"]
    )
    assert v["regions"]["count"] == 2 and v["region"]["id"] == ids["r1"]
    assert "404" in out["region_missing"]["err"]
    assert v["region_key_a"] == ids["r2"]  # [, "m")
    assert v["region_key_binary"] == ids["r1"]  # "t\x80..." is in ["m", )
    assert v["regions_range"] == 2 and v["regions_store"] == 2 and v["regions_empty"] == 2
    assert v["region_stats"]["count"] == 2
    assert v["replicated"] in ("INPROGRESS", "PENDING")  # one replica of max-replicas 3
    assert v["hot_read"] == v["hot_write"] == {"as_peer": {}, "as_leader": {}}  # no traffic
    assert v["config"] == {"max-store-down-time": "30m0s", "halt-scheduling": "false"}
    assert "400" in out["set_config_bad"]["err"] and "uint64" in out["set_config_bad"]["err"]
    assert v["schedule"] == {"leader-schedule-limit": 6.0, "max-store-down-time": "45m0s"}
    assert v["replicate"]["max-replicas"] == 3.0
    assert v["cluster_version"] == "8.5.0"
    assert "balance-leader-scheduler" in v["schedulers"]
    assert v["evict_config"]["store-id-ranges"] == {str(ids["s2"]): []}
    assert v["rule"]["id"] == "default" and v["rule"]["count"] == 3
    assert v["rule_bundles"][0]["group_id"] == "pd" and v["rule_groups"][0]["id"] == "pd"
    assert v["label_rules"] in (None, [])
    # Placement-rule writes (the embedded mode): each one in force for the next read.
    written = v["rule_written"]
    assert written["role"] == "learner"
    assert written["start_key"] == (b"a" + b"\0" * 7 + b"\xf8").hex()  # "a", memcomparable
    assert "400" in out["rule_set_bad"]["err"] and "invalid count 0" in out["rule_set_bad"]["err"]
    assert [r["id"] for r in v["rules_conf"]] == ["v-1"]  # the batch added one, deleted one
    assert v["rule_group"] == {"id": "conf", "index": 5}
    bundle = v["rule_bundle"]
    assert (bundle["group_index"], [(r["group_id"], r["id"]) for r in bundle["rules"]]) == (
        6,
        [("conf", "v-2")],  # partial: the bundle replaced group conf only
    )
    assert [b["group_id"] for b in v["rule_bundles_after"]] == ["pd"]
    assert v["min_resolved_ts"] == {"ts": 0, "stores": {str(ids["s1"]): 0}}
    assert v["gc"]["gc_safe_point"] == 0
    assert v["gc_delete"] == "Delete service GC safepoint successfully."
