"""Store scores (shared/reference/pd-scheduling.md §2.1, §2.3): leader score, region
score v1/v2 with low-space handling, tolerance, and location distinct score."""

from __future__ import annotations

import math

from pdcore.domain.config import ScheduleConfig
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import Store

GIB = 1 << 30
MIB = 1 << 20
MAX_SCORE = 1024.0**3
INIT_CLUSTER_REGION_THRESHOLD = 100


def leader_score(tree: RegionTree, store_id: int, cfg: ScheduleConfig, delta: float = 0.0) -> float:
    st = tree.store_stats(store_id)
    if cfg.leader_schedule_policy == "size":
        return st.leader_size + delta
    return st.leader_count + delta


def is_low_space(store: Store, cfg: ScheduleConfig, region_count: int) -> bool:
    cap, avail = store.stats.capacity, store.stats.available
    if cap == 0:
        return False
    if region_count < INIT_CLUSTER_REGION_THRESHOLD and avail > 8 * GIB:
        return False
    return avail / cap < 1 - cfg.low_space_ratio


def region_score(tree: RegionTree, store: Store, cfg: ScheduleConfig, delta: float = 0.0) -> float:
    """PD's region score: pure size while disk is roomy, exploding as it fills."""
    size = tree.store_stats(store.id).region_size
    cap, avail, used = store.stats.capacity, store.stats.available, store.stats.used_size
    if cap == 0:
        return size + delta
    if cfg.region_score_formula_version == "v1":
        return _score_v1(size, delta, cap / MIB, avail / MIB, used / MIB, cfg)
    return _score_v2(size, delta, cap / GIB, avail / GIB, used / GIB, cfg)


def _score_v1(
    size: float, delta: float, cap: float, avail: float, used: float, cfg: ScheduleConfig
) -> float:
    amp = size / used if size and used else 1.0
    high = (1 - cfg.high_space_ratio) * cap
    low = (1 - cfg.low_space_ratio) * cap
    a = avail - delta / amp
    if a >= high:
        return size + delta
    if a <= low:
        return MAX_SCORE - a
    x1 = y1 = (used + avail - high) * amp
    x2 = (used + avail - low) * amp
    y2 = MAX_SCORE - low
    k = (y2 - y1) / (x2 - x1)
    b = y1 - k * x1
    return k * (size + delta) + b


def _score_v2(
    size: float, delta: float, cap: float, avail: float, used: float, cfg: ScheduleConfig
) -> float:
    k, m, big_b = 1.0, 256.0, 1e10
    f = max(50.0, cap * (1 - cfg.low_space_ratio))
    r = size + delta if size + delta >= 0 else size
    if size and delta:
        adj = used * (size + delta) / size
        if 0.5 * used < adj < 2 * used:
            if 0 < avail < cap:
                avail = cap - adj - (cap - avail - used)
            used = adj
    if avail >= cap or cap < 1:
        return r
    if avail > f:
        return (k + m * (math.log(cap) - math.log(avail - f + 1)) / (cap - avail + f - 1)) * r
    return (k + m * math.log(cap) / cap) * r + big_b * (f - avail) / f


def tolerant_resource(
    tree: RegionTree, stores: list[Store], cfg: ScheduleConfig, leader: bool
) -> float:
    """How much imbalance to tolerate before moving anything (§2.3)."""
    if leader and cfg.leader_schedule_policy == "count":
        return cfg.tolerant_size_ratio or 5.0
    ratio = cfg.tolerant_size_ratio
    if ratio == 0:
        counts = [tree.store_stats(s.id).region_count for s in stores] or [0]
        ratio = max(1.0, 0.005 * max(counts))
    regions = len(tree)
    avg = (tree.total_size() / regions) if regions else 1.0
    return max(1.0, avg) * ratio


def distinct_score(labels: tuple[str, ...], store: Store, others: list[Store]) -> float:
    """Location isolation: for each other replica, 100^(n-i-1) for the first label
    level i where the two stores differ (unset labels count as the same)."""
    n = len(labels)
    score = 0.0
    for other in others:
        if other.id == store.id:
            continue
        for i, key in enumerate(labels):
            a, b = store.label(key), other.label(key)
            if a and b and a != b:
                score += 100.0 ** (n - i - 1)
                break
    return score
