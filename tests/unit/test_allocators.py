from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdcore.domain.gc import GcState
from pdcore.domain.ids import IdAllocator
from pdcore.domain.tso import MAX_LOGICAL, TsoAllocator, WindowExhausted


def serve(tso: TsoAllocator, count: int, now: int) -> int:
    try:
        return tso.generate(count, now).compose()
    except WindowExhausted as e:
        tso.set_window(e.needed_until)
        return tso.generate(count, now).compose()


def test_tso_batch_returns_the_largest_and_never_repeats() -> None:
    tso = TsoAllocator()
    tso.set_window(tso.start(1000, 0))
    a = tso.generate(10, 1000)
    b = tso.generate(1, 1000)
    assert a.physical == 1000 and a.logical == 10
    assert b.compose() == a.compose() + 1


def test_tso_refuses_beyond_the_persisted_window() -> None:
    tso = TsoAllocator(save_interval_ms=3000)
    window = tso.start(1000, 0)
    with pytest.raises(WindowExhausted):
        tso.generate(1, 1000)  # nothing persisted yet
    tso.set_window(window)
    tso.generate(1, 3999)
    with pytest.raises(WindowExhausted):
        tso.generate(1, window)


def test_tso_logical_overflow_moves_physical_forward() -> None:
    tso = TsoAllocator()
    tso.set_window(tso.start(1000, 0) + 10_000)
    first = tso.generate(MAX_LOGICAL - 10, 1000)
    second = tso.generate(20, 1000)
    assert second.physical == first.physical + 1 and second.compose() > first.compose()


def test_restart_starts_above_the_saved_window() -> None:
    tso = TsoAllocator()
    tso.set_window(tso.start(5000, 0))
    before = tso.generate(1, 5000).compose()
    restarted = TsoAllocator()
    # The wall clock went back after the crash; the saved window still wins.
    restarted.set_window(restarted.start(100, tso.saved_until))
    after = restarted.generate(1, 100)
    assert after.compose() > before and after.physical > tso.saved_until


def test_tso_rejects_bad_counts() -> None:
    tso = TsoAllocator()
    tso.set_window(tso.start(1, 0))
    with pytest.raises(ValueError, match="positive"):
        tso.generate(0, 1)
    with pytest.raises(ValueError, match="exceeds"):
        tso.generate(MAX_LOGICAL, 1)


@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(-50, 100)), max_size=200))
def test_tso_strictly_increasing_whatever_the_clock(steps: list[tuple[int, int]]) -> None:
    tso = TsoAllocator()
    now = 1_000_000
    tso.set_window(tso.start(now, 0))
    last = 0
    for count, jump in steps:
        now += jump  # the clock may go backwards
        ts = serve(tso, count, now)
        assert ts - (count - 1) > last
        last = ts


def test_ids_are_reserved_before_use_and_survive_restart() -> None:
    ids = IdAllocator(step=100)
    ids.start(0)
    need = ids.reservation_needed(1)
    assert need is not None
    with pytest.raises(RuntimeError):
        ids.alloc(1)
    ids.set_end(need)
    got = [ids.alloc(1) for _ in range(50)]
    assert got == list(range(1, 51))
    assert ids.alloc(5) == 55
    again = IdAllocator(step=100)
    again.start(ids.end)  # a restart resumes at the persisted mark
    again.set_end(again.reservation_needed(1) or again.end)
    assert again.alloc(1) > 55


def test_gc_safe_point_only_moves_forward() -> None:
    gc = GcState()
    assert gc.update_safe_point(10) == 10
    assert gc.update_safe_point(5) == 10


def test_service_safe_points_with_ttl() -> None:
    gc = GcState()
    changed, minimum = gc.update_service(b"cdc", 60, 100, now_s=0)
    assert changed and minimum and minimum.safe_point == 100
    changed, minimum = gc.update_service(b"br", 10, 50, now_s=0)
    assert not changed and minimum and minimum.service_id == b"cdc"  # below the minimum
    changed, minimum = gc.update_service(b"br", 100, 150, now_s=0)
    assert changed and minimum and minimum.safe_point == 100
    assert gc.min_service_safe_point(61).service_id == b"br"  # type: ignore[union-attr]
    assert gc.min_service_safe_point(1000) is None
    gc.update_service(b"cdc", 60, 200, now_s=1000)
    changed, _ = gc.update_service(b"cdc", 0, 0, now_s=1000)
    assert changed and gc.min_service_safe_point(1000) is None
