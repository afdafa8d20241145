"""Ids are uint64 in PD, but Kubernetes objects hold int64: a larger id is refused with
a clear error before any object is written, not rounded by the API server."""

from __future__ import annotations

import pytest

from pdcore.adapters.kube.convert import INT64_MAX, check_int64_ids, store_spec
from pdcore.domain.errors import InvalidValue
from pdcore.domain.region import Peer, Region, RegionEpoch
from pdcore.domain.store import Store


def test_ids_above_int64_are_refused() -> None:
    assert store_spec("c", Store(INT64_MAX, "a:1"))["storeID"] == INT64_MAX
    with pytest.raises(InvalidValue, match="store id 9223372036854775808 does not fit"):
        store_spec("c", Store(INT64_MAX + 1, "a:1"))
    region = Region(5, b"", b"", RegionEpoch(1, 1), (Peer((1 << 64) - 1, 1),))
    with pytest.raises(InvalidValue, match="peer id"):
        check_int64_ids(Store(1, "a:1"), region)
