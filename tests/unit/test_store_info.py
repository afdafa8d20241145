"""Stores on kubepd's own gRPC are protobuf (metapb.Store + pdpb.StoreStats), and every
field a scheduler outside the pd-leader reads survives the trip."""

from __future__ import annotations

import dataclasses

from pdcore.adapters import codec
from pdcore.domain.store import NodeState, Store, StoreState, StoreStats
from pdcore.proto import kubepdpb_pb2


def test_a_store_with_its_stats_survives_the_wire() -> None:
    # Every stats field distinct and non-zero, so a dropped or swapped one shows.
    values = iter(range(101, 200))
    stats = StoreStats(
        **{
            f.name: (True if f.type in (bool, "bool") else next(values))
            for f in dataclasses.fields(StoreStats)
        }
    )
    store = Store(
        id=7,
        address="tikv-7:20160",
        state=StoreState.OFFLINE,
        node_state=NodeState.REMOVING,
        labels=(("zone", "a"), ("host", "h7")),
        version="8.5.0",
        peer_address="tikv-7:20160",
        status_address="tikv-7:20180",
        git_hash="abc",
        start_timestamp=1700000000,
        deploy_path="/tikv",
        last_heartbeat_ns=1_700_000_000_123_456_789,
        physically_destroyed=True,
        stats=stats,
    )
    resp = kubepdpb_pb2.GetStoresResponse(stores=[codec.store_info_to_pb(store)])
    wire = kubepdpb_pb2.GetStoresResponse.FromString(resp.SerializeToString())
    (back,) = (codec.store_info_from_pb(s) for s in wire.stores)
    assert back == store  # Store's own fields (stats do not take part in ==)
    assert back.stats == stats
    assert wire.stores[0].stats.store_id == 7
