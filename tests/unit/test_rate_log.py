"""Bad-input logging: one line per kind per interval, with the count it held back."""

from __future__ import annotations

import logging

import pytest

from pdcore.service.rate_log import RateLimitedLog


def test_one_line_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        logged = [rl.warning("a", "bad a") for _ in range(100)] + [rl.warning("b", "bad b")]
        now[0] = 11
        assert rl.warning("a", "bad a again")
    assert logged.count(True) == 2
    assert [r.getMessage() for r in caplog.records] == ["bad a", "bad b", "bad a again"]
    assert caplog.records[-1].suppressed == 99  # type: ignore[attr-defined]
    assert not any(r.exc_info for r in caplog.records)


def test_other_levels_share_the_same_limit(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "t"):
        for _ in range(44):  # a failover's worth of ended streams
            rl.log(logging.INFO, "ended", "stream ended")
        now[0] = 10
        rl.log(logging.INFO, "ended", "stream ended")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "stream ended"),
        (logging.INFO, "stream ended"),
    ]
    assert caplog.records[-1].suppressed == 43  # type: ignore[attr-defined]


def test_a_burst_allows_that_many_lines_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=1, clock=lambda: now[0], burst=3)
    with caplog.at_level(logging.WARNING, "t"):
        logged = [rl.warning("r", "rejected %d", i, extra={"region": i}) for i in range(10)]
        now[0] = 0.99
        assert not rl.warning("r", "still the same second")
        now[0] = 1.0
        assert rl.warning("r", "rejected again")
    assert logged == [True] * 3 + [False] * 7
    assert [r.getMessage() for r in caplog.records][:3] == [
        "rejected 0",
        "rejected 1",
        "rejected 2",
    ]
    assert [r.region for r in caplog.records[:3]] == [0, 1, 2]  # type: ignore[attr-defined]
    assert caplog.records[-1].suppressed == 8  # type: ignore[attr-defined]
    assert not hasattr(caplog.records[0], "suppressed")
