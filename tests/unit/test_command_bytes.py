"""PD's scheduling commands as TiKV receives them: hand-encoded RegionHeartbeatResponse
bytes (from the protobuf wire rules and kvproto's field numbers) decode to the command
the simulator executes, and our encoder writes the same bytes. Tag byte = field number
<< 3 | wire type (0 varint, 2 length-delimited)."""

from __future__ import annotations

from pdcore.adapters import codec
from pdcore.domain.commands import ChangePeer, ConfChangeType, TransferLeader
from pdcore.domain.region import Peer, PeerRole, RegionEpoch
from pdcore.proto import pdpb_pb2

HEADER = "0a 02 08 07"  # 1: header {1: cluster_id 7}
TAIL = (
    " 20 09"  # 4: region_id 9
    " 2a 04 08 03 10 05"  # 5: region_epoch {1: conf_ver 3, 2: version 5}
)

# 2: change_peer {1: peer {1: id 300 (ac 02), 2: store 4, 3: Learner}, 2: AddLearnerNode}
ADD_LEARNER = bytes.fromhex(HEADER + " 12 0b 0a 07 08 ac 02 10 04 18 01 10 02" + TAIL)
# 3: transfer_leader {1: peer {1: id 12, 2: store 2}}
TRANSFER = bytes.fromhex(HEADER + " 1a 06 0a 04 08 0c 10 02" + TAIL)


def test_add_learner_bytes_decode_to_the_command() -> None:
    cmd = codec.command_from_pb(pdpb_pb2.RegionHeartbeatResponse.FromString(ADD_LEARNER))
    assert cmd is not None
    assert cmd.region_id == 9 and cmd.epoch == RegionEpoch(3, 5)
    assert cmd.body == ChangePeer(ConfChangeType.ADD_LEARNER_NODE, Peer(300, 4, PeerRole.LEARNER))
    assert codec.command_to_pb(cmd, 7).SerializeToString() == ADD_LEARNER


def test_transfer_leader_bytes_decode_to_the_command() -> None:
    cmd = codec.command_from_pb(pdpb_pb2.RegionHeartbeatResponse.FromString(TRANSFER))
    assert cmd is not None and cmd.region_id == 9
    assert isinstance(cmd.body, TransferLeader) and cmd.body.peer == Peer(12, 2)
    assert codec.command_to_pb(cmd, 7).SerializeToString() == TRANSFER


def test_a_keepalive_is_no_command() -> None:
    assert (
        codec.command_from_pb(pdpb_pb2.RegionHeartbeatResponse.FromString(bytes.fromhex(HEADER)))
        is None
    )
