"""Config rules PD checks before accepting a config: every path that sets one (HTTP,
the TiKVCluster, a saved config) rejects a config no scheduler could run with."""

from __future__ import annotations

import pytest

from pdcore.adapters.kube.convert import config_from_cluster
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.config import (
    ClusterConfig,
    ReplicationConfig,
    ScheduleConfig,
    update_from_pd_json,
)
from pdcore.domain.errors import InvalidValue
from tests.unit.test_node import make_node


@pytest.mark.parametrize(
    ("cfg", "changes", "message"),
    [
        (ReplicationConfig(), {"max-replicas": 0}, "max-replicas must be at least 1"),
        (ReplicationConfig(), {"isolation-level": "zone"}, "must be one of location-labels"),
        (ScheduleConfig(), {"low-space-ratio": 1.5}, "low-space-ratio should be between"),
        (ScheduleConfig(), {"high-space-ratio": 0.9}, "smaller than low-space-ratio"),
        (ScheduleConfig(), {"leader-schedule-policy": "random"}, "must be count or size"),
        (ScheduleConfig(), {"region-score-formula-version": "v9"}, "must be v1 or v2"),
    ],
)
def test_invalid_updates_are_rejected(
    cfg: ScheduleConfig | ReplicationConfig, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        update_from_pd_json(cfg, changes)


def test_valid_updates_still_apply() -> None:
    repl = update_from_pd_json(
        ReplicationConfig(),
        {"max-replicas": 5, "location-labels": ["zone"], "isolation-level": "zone"},
    )
    assert isinstance(repl, ReplicationConfig) and repl.max_replicas == 5


def test_a_tikvcluster_with_zero_replicas_is_rejected() -> None:
    with pytest.raises(ValueError, match="max-replicas must be at least 1"):
        config_from_cluster({"spec": {"replication": {"maxReplicas": 0}}})


async def test_the_node_refuses_and_ignores_invalid_configs() -> None:
    store = MemoryStore()
    node = make_node(store)
    await node.start()
    bad = ClusterConfig(replication=ReplicationConfig(max_replicas=0))
    with pytest.raises(InvalidValue, match="max-replicas"):
        await node.set_config(bad)
    assert store.state.config is None and node.config.replication.max_replicas == 3
    await node.stop()
    store.state.config = bad  # saved by an older version
    again = make_node(store)
    await again.start()
    assert again.config.replication.max_replicas == 3
    await again.stop()
