"""Our own .proto files stay wire-compatible with TiKV / the Go PD client.

(a) the committed pdcore/proto modules are exactly what scripts/gen-proto makes from proto/;
(b) field numbers and types match the reference facts (a spot table, plus every row of
    tests/data/pd-protocol-fields.md, the reference facts kept with the tests);
(c) the pdpb.PD and meta_storagepb.MetaStorage services carry every RPC with the right
    streaming kinds and method paths;
(d) byte strings encoded by hand from the protobuf wire rules decode as expected.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from pdcore.proto import (
    meta_storagepb_pb2,
    meta_storagepb_pb2_grpc,
    metapb_pb2,
    pdpb_pb2,
    pdpb_pb2_grpc,
)

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
GENERATED_DIR = ROOT / "pdcore" / "proto"
# A copy of the project's reference field tables (shared/reference), kept in the repository
# so that every row is checked in a clean clone too.
FIELDS_MD = Path(__file__).resolve().parents[1] / "data" / "pd-protocol-fields.md"


# ---------------------------------------------------------------------------------------
# (a) reproducible generation


def _generate(out: Path) -> list[str]:
    """Run protoc the way scripts/gen-proto does; returns the generated file names."""
    sources = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    assert sources, "no .proto files under proto/"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--pyi_out={out}",
            *sources,
        ],
        cwd=PROTO_DIR,
        check=True,
        capture_output=True,
    )
    gen = out / "pdcore" / "proto"
    for f in gen.glob("*_pb2_grpc.py"):  # files without a service give an empty stub module
        if "Stub" not in f.read_text():
            f.unlink()
    return sorted(p.name for p in gen.iterdir())


def _committed() -> list[str]:
    return sorted(p.name for p in GENERATED_DIR.glob("*_pb2*") if p.suffix in (".py", ".pyi"))


def test_committed_modules_equal_a_fresh_generation(tmp_path: Path) -> None:
    names = _generate(tmp_path)
    assert names == _committed(), "generated file set differs; run scripts/gen-proto"
    _, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "pdcore" / "proto", GENERATED_DIR, names, shallow=False
    )
    assert not mismatch and not errors, f"stale generated files {mismatch}; run scripts/gen-proto"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    names = _generate(a)
    assert _generate(b) == names
    for name in names:
        assert (a / "pdcore/proto" / name).read_bytes() == (b / "pdcore/proto" / name).read_bytes()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gen_proto_script_check_mode_passes() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto"), "--check"],
        cwd=ROOT,
        env={**os.environ, "PY": os.path.relpath(sys.executable, ROOT)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_init_says_generated() -> None:
    doc = (GENERATED_DIR / "__init__.py").read_text()
    assert "scripts/gen-proto" in doc


# ---------------------------------------------------------------------------------------
# (b) field numbers and types

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def _type_spec(f: FieldDescriptor) -> str:
    """A field's type in the reference notation: `repeated enum pdpb.ServiceMode` etc."""
    mt = f.message_type
    if mt is not None and mt.GetOptions().map_entry:
        key, value = mt.fields_by_name["key"], mt.fields_by_name["value"]
        return f"map<{_type_spec(key)},{_type_spec(value)}>"
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        base = mt.full_name
    elif f.type == FieldDescriptor.TYPE_ENUM:
        base = f"enum {f.enum_type.full_name}"
    else:
        base = _SCALARS[f.type]
    return f"repeated {base}" if f.is_repeated else base


def _field(message: str, field: str) -> FieldDescriptor:
    md = descriptor_pool.Default().FindMessageTypeByName(message)
    assert field in md.fields_by_name, f"{message} has no field {field}"
    return md.fields_by_name[field]


SPOT_CHECKS = [
    ("pdpb.RegionHeartbeatRequest", "approximate_size", 10, "uint64"),
    ("pdpb.RegionHeartbeatRequest", "interval", 12, "pdpb.TimeInterval"),
    ("pdpb.RegionHeartbeatRequest", "approximate_keys", 13, "uint64"),
    ("pdpb.RegionHeartbeatRequest", "term", 14, "uint64"),
    ("pdpb.RegionHeartbeatRequest", "bucket_meta", 20, "metapb.BucketMeta"),
    ("pdpb.RegionHeartbeatRequest", "cpu_stats", 21, "pdpb.CPUStats"),
    ("pdpb.RegionHeartbeatResponse", "change_split", 11, "pdpb.ChangeSplit"),
    ("pdpb.ChangePeer", "change_type", 2, "enum eraftpb.ConfChangeType"),
    ("metapb.Region", "peers", 5, "repeated metapb.Peer"),
    ("metapb.Region", "encryption_meta", 6, "encryptionpb.EncryptionMeta"),
    ("metapb.Store", "last_heartbeat", 11, "int64"),
    ("metapb.Store", "node_state", 13, "enum metapb.NodeState"),
    ("metapb.Peer", "role", 3, "enum metapb.PeerRole"),
    ("pdpb.TsoResponse", "timestamp", 3, "pdpb.Timestamp"),
    ("pdpb.Timestamp", "suffix_bits", 3, "uint32"),
    ("pdpb.AllocIDResponse", "count", 3, "uint32"),
    ("pdpb.StoreStats", "is_stopping", 32, "bool"),
    ("pdpb.StoreStats", "network_slow_scores", 30, "map<uint64,uint64>"),
    ("pdpb.StoreStats", "dfs", 31, "repeated pdpb.DfsStatItem"),
    ("pdpb.StoreStats", "interval", 15, "pdpb.TimeInterval"),
    ("pdpb.StoreHeartbeatResponse", "state", 8, "enum metapb.NodeState"),
    ("pdpb.StoreHeartbeatResponse", "recovery_plan", 5, "pdpb.RecoveryPlan"),
    ("pdpb.SyncRegionResponse", "down_peers", 16, "repeated pdpb.PeersStats"),
    ("pdpb.SyncRegionResponse", "pending_peers", 17, "repeated pdpb.Peers"),
    ("pdpb.GetClusterInfoRequest", "header", 1, "pdpb.ResponseHeader"),
    ("pdpb.GetClusterInfoResponse", "serviceModes", 2, "repeated enum pdpb.ServiceMode"),
    ("pdpb.GetMembersResponse", "tso_allocator_leaders", 5, "map<string,pdpb.Member>"),
    ("pdpb.QueryRegionResponse", "regions_by_id", 4, "map<uint64,pdpb.RegionResponse>"),
    ("pdpb.GetRegionResponse", "down_peers", 5, "repeated pdpb.PeerStats"),
    ("pdpb.BatchScanRegionsRequest", "contain_all_key_range", 5, "bool"),
    ("pdpb.UpdateServiceGCSafePointRequest", "TTL", 3, "int64"),
    ("pdpb.IsSnapshotRecoveringResponse", "marked", 2, "bool"),
    ("pdpb.ReportMinResolvedTsRequest", "min_resolved_ts", 3, "uint64"),
    ("pdpb.LoadGlobalConfigResponse", "revision", 2, "int64"),
    ("pdpb.WatchGlobalConfigResponse", "header", 3, "pdpb.ResponseHeader"),
    ("pdpb.GlobalConfigItem", "payload", 5, "bytes"),
    ("pdpb.StoreGlobalConfigResponse", "error", 1, "pdpb.Error"),
    ("pdpb.GetGCStateRequest", "keyspace_scope", 2, "pdpb.KeyspaceScope"),
    ("pdpb.GetGCStateResponse", "gc_state", 2, "pdpb.GCState"),
    ("pdpb.UpdateServiceSafePointV2Request", "ttl", 5, "int64"),
    ("pdpb.GetMinTSResponse", "timestamp", 2, "pdpb.Timestamp"),
    ("replication_modepb.DRAutoSync", "pause_region_split", 6, "bool"),
    ("encryptionpb.EncryptionMeta", "iv", 2, "bytes"),
    ("meta_storagepb.ResponseHeader", "revision", 3, "int64"),
    ("meta_storagepb.Event", "type", 1, "enum meta_storagepb.Event.EventType"),
    ("meta_storagepb.KeyValue", "value", 5, "bytes"),
    ("meta_storagepb.WatchRequest", "start_revision", 4, "int64"),
]


@pytest.mark.parametrize(("message", "field", "number", "type_spec"), SPOT_CHECKS)
def test_spot_field(message: str, field: str, number: int, type_spec: str) -> None:
    f = _field(message, field)
    assert (f.number, _type_spec(f)) == (number, type_spec)


RESERVED_GAPS = [
    ("pdpb.RegionHeartbeatRequest", 11),
    ("pdpb.GetRegionResponse", 4),
    ("pdpb.PeerReport", 1),
    ("pdpb.KeyspaceScope", 2),
]


@pytest.mark.parametrize(("message", "number"), RESERVED_GAPS)
def test_left_out_numbers_are_reserved(message: str, number: int) -> None:
    md = descriptor_pool.Default().FindMessageTypeByName(message)
    assert number not in md.fields_by_number
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.DescriptorProto()
    md.CopyToProto(proto)
    assert any(r.start <= number < r.end for r in proto.reserved_range)


def _reference_rows() -> list[tuple[str, str]]:
    rows = []
    for line in FIELDS_MD.read_text().splitlines():
        m = re.match(r"\|\s*((?:enum )?[a-z_]+pb\.\w+)\s*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    return rows


REFERENCE_ROWS = _reference_rows()


@pytest.mark.parametrize(("name", "spec"), REFERENCE_ROWS, ids=[r[0] for r in REFERENCE_ROWS])
def test_reference_table_row(name: str, spec: str) -> None:
    pool = descriptor_pool.Default()
    if name.startswith("enum "):
        ed = pool.FindEnumTypeByName(name.removeprefix("enum "))
        want = dict(item.split("=") for item in spec.split(", "))
        assert {v.name: v.number for v in ed.values} == {k: int(v) for k, v in want.items()}
        return
    md = pool.FindMessageTypeByName(name)
    for item in spec.split(", "):
        fname, rest = item.split("=", 1)
        number, type_spec = rest.split(":", 1)
        f = md.fields_by_name.get(fname)
        assert f is not None, f"{name}.{fname} missing"
        assert (f.number, _type_spec(f)) == (int(number), type_spec), f"{name}.{fname}"


def test_every_reference_row_is_checked() -> None:
    assert len(REFERENCE_ROWS) > 100


def test_no_field_number_used_twice_and_none_in_reserved_ranges() -> None:
    from google.protobuf import descriptor_pb2

    for module in (pdpb_pb2, metapb_pb2, meta_storagepb_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        stack = list(fdp.message_type)
        while stack:
            m = stack.pop()
            stack.extend(m.nested_type)
            numbers = [f.number for f in m.field]
            assert len(numbers) == len(set(numbers)), m.name
            for r in m.reserved_range:
                assert not [n for n in numbers if r.start <= n < r.end], m.name


# ---------------------------------------------------------------------------------------
# (c) services

# Used only when the reference file is absent: (rpc, kind); the request and response are
# <Rpc>Request / <Rpc>Response unless listed in _FALLBACK_TYPES.
FALLBACK_RPCS = [
    ("GetClusterInfo", "unary"),
    ("GetMembers", "unary"),
    ("Tso", "bidi"),
    ("Bootstrap", "unary"),
    ("IsBootstrapped", "unary"),
    ("AllocID", "unary"),
    ("IsSnapshotRecovering", "unary"),
    ("GetStore", "unary"),
    ("PutStore", "unary"),
    ("GetAllStores", "unary"),
    ("StoreHeartbeat", "unary"),
    ("RegionHeartbeat", "bidi"),
    ("GetRegion", "unary"),
    ("GetPrevRegion", "unary"),
    ("GetRegionByID", "unary"),
    ("QueryRegion", "bidi"),
    ("ScanRegions", "unary"),
    ("BatchScanRegions", "unary"),
    ("AskSplit", "unary"),
    ("ReportSplit", "unary"),
    ("AskBatchSplit", "unary"),
    ("ReportBatchSplit", "unary"),
    ("GetClusterConfig", "unary"),
    ("PutClusterConfig", "unary"),
    ("ScatterRegion", "unary"),
    ("GetGCSafePoint", "unary"),
    ("UpdateGCSafePoint", "unary"),
    ("UpdateServiceGCSafePoint", "unary"),
    ("GetGCSafePointV2", "unary"),
    ("WatchGCSafePointV2", "server-stream"),
    ("UpdateGCSafePointV2", "unary"),
    ("UpdateServiceSafePointV2", "unary"),
    ("GetAllGCSafePointV2", "unary"),
    ("AdvanceGCSafePoint", "unary"),
    ("AdvanceTxnSafePoint", "unary"),
    ("SetGCBarrier", "unary"),
    ("DeleteGCBarrier", "unary"),
    ("SetGlobalGCBarrier", "unary"),
    ("DeleteGlobalGCBarrier", "unary"),
    ("GetGCState", "unary"),
    ("GetAllKeyspacesGCStates", "unary"),
    ("SyncRegions", "bidi"),
    ("GetOperator", "unary"),
    ("SyncMaxTS", "unary"),
    ("SplitRegions", "unary"),
    ("SplitAndScatterRegions", "unary"),
    ("GetDCLocationInfo", "unary"),
    ("StoreGlobalConfig", "unary"),
    ("LoadGlobalConfig", "unary"),
    ("WatchGlobalConfig", "server-stream"),
    ("ReportBuckets", "client-stream"),
    ("ReportMinResolvedTS", "unary"),
    ("SetExternalTimestamp", "unary"),
    ("GetExternalTimestamp", "unary"),
    ("GetMinTS", "unary"),
]
_FALLBACK_TYPES = {
    "GetPrevRegion": ("GetRegionRequest", "GetRegionResponse"),
    "GetRegionByID": ("GetRegionByIDRequest", "GetRegionResponse"),
    "SyncRegions": ("SyncRegionRequest", "SyncRegionResponse"),
    "ReportMinResolvedTS": ("ReportMinResolvedTsRequest", "ReportMinResolvedTsResponse"),
}

# kind -> (client_streaming, server_streaming)
_KINDS = {
    "unary": (False, False),
    "server-stream": (False, True),
    "client-stream": (True, False),
    "bidi": (True, True),
}
_RPC_ROW = re.compile(r"\|\s*(\w+)\((\w+)\)\s*→\s*(\w+)\s*\|\s*([\w-]+)\s*\|")


def _rpc_table() -> list[tuple[str, str, str, str]]:
    if FIELDS_MD.exists():
        rows = [_RPC_ROW.match(line) for line in FIELDS_MD.read_text().splitlines()]
        return [(m[1], m[2], m[3], m[4]) for m in rows if m]
    out = []
    for rpc, kind in FALLBACK_RPCS:
        req, resp = _FALLBACK_TYPES.get(rpc, (f"{rpc}Request", f"{rpc}Response"))
        out.append((rpc, req, resp, kind))
    return out


RPCS = _rpc_table()
PD_SERVICE = pdpb_pb2.DESCRIPTOR.services_by_name["PD"]


def test_rpc_table_is_complete() -> None:
    assert len(RPCS) == len(FALLBACK_RPCS)
    assert {r[0] for r in RPCS} == {r[0] for r in FALLBACK_RPCS}
    assert {r[0] for r in RPCS} == set(PD_SERVICE.methods_by_name), "extra or missing RPCs"


# Global-config messages carry no header (or one at field 3); GetClusterInfoRequest's field 1
# is a ResponseHeader. Every other message has `header = 1` of the matching header type.
_HEADER_EXCEPTIONS: dict[str, tuple[int, str] | None] = {
    "LoadGlobalConfigRequest": None,
    "LoadGlobalConfigResponse": None,
    "StoreGlobalConfigRequest": None,
    "StoreGlobalConfigResponse": None,
    "WatchGlobalConfigRequest": None,
    "WatchGlobalConfigResponse": (3, "pdpb.ResponseHeader"),
    "GetClusterInfoRequest": (1, "pdpb.ResponseHeader"),
}


def _header(md: Any) -> tuple[int, str] | None:
    f = md.fields_by_name.get("header")
    return None if f is None else (f.number, f.message_type.full_name)


@pytest.mark.parametrize(
    ("rpc", "request_type", "response_type", "kind"), RPCS, ids=[r[0] for r in RPCS]
)
def test_pd_rpc(rpc: str, request_type: str, response_type: str, kind: str) -> None:
    assert PD_SERVICE.full_name == "pdpb.PD"
    m = PD_SERVICE.methods_by_name[rpc]
    assert m.input_type.full_name == f"pdpb.{request_type}"
    assert m.output_type.full_name == f"pdpb.{response_type}"
    assert (m.client_streaming, m.server_streaming) == _KINDS[kind]
    # a response header lets the server report an error on every call
    want_req = _HEADER_EXCEPTIONS.get(request_type, (1, "pdpb.RequestHeader"))
    want_resp = _HEADER_EXCEPTIONS.get(response_type, (1, "pdpb.ResponseHeader"))
    assert _header(m.input_type) == want_req
    assert _header(m.output_type) == want_resp


def test_meta_storage_service() -> None:
    svc = meta_storagepb_pb2.DESCRIPTOR.services_by_name["MetaStorage"]
    assert svc.full_name == "meta_storagepb.MetaStorage"
    got = {m.name: (m.client_streaming, m.server_streaming) for m in svc.methods}
    assert got == {
        "Watch": (False, True),
        "Get": (False, False),
        "Put": (False, False),
        "Delete": (False, False),
    }


class _RecordingChannel:
    """Stands in for a grpc.Channel: records the method paths a generated stub binds."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _bind(self, kind: str) -> Any:
        def bind(path: str, *args: Any, **kwargs: Any) -> None:
            self.paths[path] = kind

        return bind

    def __getattr__(self, name: str) -> Any:
        if name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            return self._bind(name)
        raise AttributeError(name)


def test_generated_stubs_use_the_right_method_paths() -> None:
    pd = _RecordingChannel()
    pdpb_pb2_grpc.PDStub(pd)
    as_kind = {
        (False, False): "unary_unary",
        (False, True): "unary_stream",
        (True, False): "stream_unary",
        (True, True): "stream_stream",
    }
    assert pd.paths == {f"/pdpb.PD/{r[0]}": as_kind[_KINDS[r[3]]] for r in RPCS}
    ms = _RecordingChannel()
    meta_storagepb_pb2_grpc.MetaStorageStub(ms)
    assert ms.paths == {
        "/meta_storagepb.MetaStorage/Watch": "unary_stream",
        "/meta_storagepb.MetaStorage/Get": "unary_unary",
        "/meta_storagepb.MetaStorage/Put": "unary_unary",
        "/meta_storagepb.MetaStorage/Delete": "unary_unary",
    }


# ---------------------------------------------------------------------------------------
# (d) hand-encoded bytes. Tag byte = field_number << 3 | wire_type (0 varint, 2 length-
# delimited); varints are little-endian 7-bit groups with the high bit as "more follows".

# metapb.Region{id=1, start_key=b"a", region_epoch{conf_ver=1, version=2},
#               peers=[Peer{id=300, store_id=3, role=Learner}]}
REGION_BYTES = bytes.fromhex(
    "08 01"  # 1:varint id = 1
    " 12 01 61"  # 2:len start_key = "a"
    " 22 04 08 01 10 02"  # 4:len region_epoch {1: conf_ver 1, 2: version 2}
    " 2a 07 08 ac 02 10 03 18 01"  # 5:len peer {1: id 300 (ac 02), 2: store 3, 3: Learner}
)


def test_hand_encoded_region_decodes() -> None:
    r = metapb_pb2.Region.FromString(REGION_BYTES)
    assert r.id == 1
    assert r.start_key == b"a" and r.end_key == b""
    assert (r.region_epoch.conf_ver, r.region_epoch.version) == (1, 2)
    assert len(r.peers) == 1
    p = r.peers[0]
    assert (p.id, p.store_id, p.role) == (300, 3, metapb_pb2.Learner)
    assert not r.HasField("encryption_meta")
    # fields are written in number order, so our encoder reproduces the same bytes
    assert r.SerializeToString() == REGION_BYTES


def test_unknown_fields_are_skipped_and_kept() -> None:
    # field 99 varint 42: tag 99<<3 = 792 -> 0x98 0x06; value 0x2a
    data = REGION_BYTES + bytes.fromhex("98 06 2a")
    r = metapb_pb2.Region.FromString(data)
    assert r.id == 1 and r.peers[0].id == 300
    assert r.SerializeToString() == data


def test_hand_encoded_tso_response() -> None:
    # header {1: cluster_id 7}; 2: count 3; 3: timestamp {1: physical 1000 (0xe8 0x07), 2: 5}
    data = bytes.fromhex("0a 02 08 07  10 03  1a 05 08 e8 07 10 05")
    t = pdpb_pb2.TsoResponse.FromString(data)
    assert t.header.cluster_id == 7 and not t.header.HasField("error")
    assert t.count == 3
    assert (t.timestamp.physical, t.timestamp.logical) == (1000, 5)


def test_hand_encoded_region_heartbeat_numbers() -> None:
    # 10: approximate_size 1 MiB = 2**20 -> varint 0x80 0x80 0x40 (tag 10<<3 = 0x50);
    # 12: interval {1: 100, 2: 160} (tag 12<<3|2 = 0x62); 14: term 5 (tag 0x70)
    data = bytes.fromhex("50 80 80 40  62 05 08 64 10 a0 01  70 05")
    hb = pdpb_pb2.RegionHeartbeatRequest.FromString(data)
    assert hb.approximate_size == 1 << 20
    assert (hb.interval.start_timestamp, hb.interval.end_timestamp) == (100, 160)
    assert hb.term == 5


def test_hand_encoded_map_field() -> None:
    # QueryRegionResponse 4: regions_by_id {5: RegionResponse{1: region {1: id 5}}}
    # map entry = {1: key 5, 2: value {...}}
    data = bytes.fromhex("22 08 08 05 12 04 0a 02 08 05")
    q = pdpb_pb2.QueryRegionResponse.FromString(data)
    assert list(q.regions_by_id) == [5]
    assert q.regions_by_id[5].region.id == 5


def test_hand_encoded_get_cluster_info_request_header() -> None:
    # The request's header is a ResponseHeader: {1: cluster_id 9, 2: error {1: type 1}}
    data = bytes.fromhex("0a 06 08 09 12 02 08 01")
    req = pdpb_pb2.GetClusterInfoRequest.FromString(data)
    assert req.header.cluster_id == 9
    assert req.header.error.type == pdpb_pb2.UNKNOWN
