"""PD's Go HTTP client against sidecar mode: it finds the members by gRPC on a
follower's client URL (PD's default discovery) and sends HTTP/1.1 to that same port;
reads answer from the member's view, writes reach the pd-leader; placement-rule
writes are refused (rules are PlacementRule objects on Kubernetes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pdcore.adapters.kube.client import KubeClient
from pdsim.cases import round_robin, zones
from pdsim.fleet import Fleet
from tests.conformance.gobuild import build_pdhttp
from tests.support.sidecars import Pods, run_fleet, wait_leader

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def pdhttp() -> Path:
    return build_pdhttp()


async def test_pd_go_http_client_through_a_follower(
    pdhttp: Path, pods: Pods, kube: KubeClient, fleet_on: Fleet
) -> None:
    fleet = fleet_on
    await fleet.bootstrap(zones(3), round_robin(12, 3), size_mib=16)
    await run_fleet(fleet, 3.0)
    leader = await wait_leader(kube, pods)
    follower = next(sc for sc in pods.sidecars if sc is not leader)
    stores = sorted(fleet.stores)
    region = min(fleet.regions.values(), key=lambda r: r.start).id
    res = subprocess.run(
        [
            str(pdhttp),
            "-discover",
            "-url",
            f"http://{follower.address}",
            "-store",
            str(stores[0]),
            "-store2",
            str(stores[1]),
            "-region",
            str(region),
            "-rule-writes",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{"))
    out: dict[str, dict[str, Any]] = json.loads(line)
    # Placement rules are PlacementRule objects here: every rule write is refused with
    # the kubectl hint, and what it would have written is not there.
    rule_writes = {
        "rule_set",
        "rule_set_bad",
        "rule_batch",
        "rule_group_set",
        "rule_bundles_set",
        "rule_delete",
        "rule_group_delete",
    }
    for name in rule_writes:
        assert "400" in out[name]["err"] and "PlacementRule" in out[name]["err"], name
    assert "404" in out["rule_written"]["err"] and "404" in out["rule_group"]["err"]
    assert [b["group_id"] for b in out["rule_bundles_after"]["value"]] == ["pd"]
    expected_errors = {
        "store_missing",
        "region_missing",
        "set_config_bad",
        "rule_written",
        "rule_group",
        *rule_writes,
    }
    failed = {k: v["err"] for k, v in out.items() if not v["ok"] and k not in expected_errors}
    assert failed == {}
    v = {k: r.get("value") for k, r in out.items()}
    # Each sidecar stands for PD to the clients in its pod (as to its TiKV): the member
    # they see, and lead through, is the local one.
    assert v["members"] == {"count": 1, "leader": follower.pod} and v["leader"] == follower.pod
    assert v["health"] and all(m["health"] for m in v["health"])
    assert v["stores"]["count"] == len(stores) and v["stores"]["first_state"] == "Up"
    assert v["regions"]["count"] == 12 and v["region"]["id"] == region
    assert "404" in out["region_missing"]["err"] and "404" in out["store_missing"]["err"]
    assert "400" in out["set_config_bad"]["err"]
    # Written through the follower, done by the pd-leader; the follower's own view of the
    # config follows the pd-leader's (a moment later).
    deadline = time.monotonic() + 30
    url = f"http://{follower.address}/pd/api/v1/config/schedule"
    while True:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            if (await r.json())["leader-schedule-limit"] == 6:
                break
        assert time.monotonic() < deadline, "the config set through a follower never took"
        await asyncio.sleep(0.3)
    assert v["evict_config"]["store-id-ranges"] == {str(stores[1]): []}
    assert v["gc_delete"] == "Delete service GC safepoint successfully."
