"""PD's config spelling: Go duration strings both ways, and PD's JSON types."""

from __future__ import annotations

import pytest

from pdcore.adapters.http import pd_config
from pdcore.domain.config import ClusterConfig


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.01, "10ms"),
        (0.0005, "500µs"),
        (1.5, "1.5s"),
        (59.0, "59s"),
        (1800.0, "30m0s"),
        (3600.0, "1h0m0s"),
        (5400.0, "1h30m0s"),
        (48 * 3600.0, "48h0m0s"),
        (90.25, "1m30.25s"),
    ],
)
def test_durations_as_go_prints_them(seconds: float, text: str) -> None:
    assert pd_config.format_duration(seconds) == text
    assert pd_config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800.0), ("1h30m", 5400.0), ("2h45m10s", 9910.0), ("0", 0.0)]
)
def test_durations_pd_ctl_sends(text: str, seconds: float) -> None:
    assert pd_config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "1x", "-5m", "30 m", "1h-5m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        pd_config.parse_duration(text)


def test_every_pd_key_round_trips() -> None:
    """What GET shows, POST takes back unchanged (the keys kubepd ignores included)."""
    cfg = ClusterConfig()
    sched = pd_config.schedule_json(cfg)
    assert pd_config.update_schedule(cfg, sched) == cfg
    repl = pd_config.replication_json(cfg)
    assert pd_config.update_replication(cfg, repl) == cfg
    assert len(pd_config.SCHEDULE) == 46 and len(pd_config.REPLICATION) == 6


def test_update_any_is_all_or_nothing() -> None:
    cfg = ClusterConfig()
    with pytest.raises(pd_config.ConfigError, match="config item nope not found"):
        pd_config.update_any(cfg, {"leader-schedule-limit": 9.0, "nope": 1})
    new, version = pd_config.update_any(
        cfg, {"schedule.leader-schedule-limit": 9.0, "replication.max-replicas": 5.0}
    )
    assert (new.schedule.leader_schedule_limit, new.replication.max_replicas) == (9, 5)
    assert version is None and cfg == ClusterConfig()
