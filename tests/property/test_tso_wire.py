"""Property: the Tso fast path's bytes mean what protobuf says they mean. Decoding gives
protobuf's (cluster id, count) or protobuf's DecodeError, whatever the bytes and whatever
the decoder saw before; encoding gives exactly protobuf's serialization."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pdcore.adapters.grpc import tso_wire
from pdcore.proto import pdpb_pb2

U64 = st.integers(0, (1 << 64) - 1)
U32 = st.integers(0, (1 << 32) - 1)
I64 = st.integers(0, (1 << 63) - 1)  # timestamps are int64 and never negative
COUNTS = st.one_of(st.integers(0, 300), st.integers(0, 1 << 18), U32)
TEXT = st.text(max_size=20)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    req = pdpb_pb2.TsoRequest(count=draw(COUNTS), dc_location=draw(st.sampled_from(["", "dc1"])))
    if draw(st.booleans()):
        req.header.cluster_id = draw(U64)
        req.header.sender_id = draw(st.sampled_from([0, 1, (1 << 64) - 1]))
        req.header.caller_id = draw(TEXT)
        req.header.caller_component = draw(TEXT)
    return req.SerializeToString()


def mangle(data: bytes, cut: int, flip: int, extra: bytes) -> bytes:
    """Truncated, one byte changed, bytes appended: shapes a real client never sends."""
    out = bytearray(data[: max(0, len(data) - cut)])
    if out and flip:
        out[flip % len(out)] ^= flip & 0xFF
    return bytes(out) + extra


def protobuf_says(data: bytes) -> tuple[int, int] | type[DecodeError]:
    try:
        req = pdpb_pb2.TsoRequest.FromString(data)
    except DecodeError:
        return DecodeError
    return req.header.cluster_id, req.count


def decoded(decoder: tso_wire.RequestDecoder, data: bytes) -> tuple[int, int] | type[DecodeError]:
    try:
        return decoder(data)
    except DecodeError:
        return DecodeError


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            requests(),
            st.integers(0, 3),
            st.integers(0, 600),
            st.sampled_from([b"", b"\x10\x05", b"\x0a\x00", b"\x18\x01", b"\xff"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_decoding_agrees_with_protobuf_after_any_history(
    stream: list[tuple[bytes, int, int, bytes]],
) -> None:
    decoder = tso_wire.RequestDecoder()
    for data, cut, flip, extra in stream:
        for msg in (data, mangle(data, cut, flip, extra), data):
            assert decoded(decoder, msg) == protobuf_says(msg), msg


def test_a_repeated_header_is_served_from_the_remembered_bytes() -> None:
    decoder = tso_wire.RequestDecoder()
    header = pdpb_pb2.RequestHeader(cluster_id=7412345678901234567, caller_id="bench")
    first = pdpb_pb2.TsoRequest(header=header, count=1).SerializeToString()
    assert decoder(first) == (7412345678901234567, 1)
    for count in (5, 127, 128, 16383, 16384, (1 << 21) - 1):
        data = pdpb_pb2.TsoRequest(header=header, count=count).SerializeToString()
        assert decoder(data) == (7412345678901234567, count)
    other = pdpb_pb2.TsoRequest(header=pdpb_pb2.RequestHeader(cluster_id=3), count=2)
    assert decoder(other.SerializeToString()) == (3, 2)  # a new header is read again


def test_garbage_is_protobufs_decode_error() -> None:
    with pytest.raises(DecodeError):
        tso_wire.RequestDecoder()(b"\xff\xff\xff\xff\x0f not a protobuf message")


def protobuf_response(cluster_id: int, count: int, physical: int, logical: int) -> bytes:
    """What the generated-handler Tso answers, field by field as it sets them."""
    resp = pdpb_pb2.TsoResponse(count=count)
    resp.header.cluster_id = cluster_id
    resp.timestamp.physical = physical
    resp.timestamp.logical = logical
    return resp.SerializeToString()


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.just(0), st.just(7412345678901234567), U64),
            COUNTS,
            st.one_of(st.just(0), st.integers(1_700_000_000_000, 1_800_000_000_000), I64),
            st.one_of(st.integers(0, 5000), st.integers(0, (1 << 18) - 1), I64),
        ),
        min_size=1,
        max_size=6,
    )
)
@example([(0, 0, 0, 0)])
@example([(1, 4095, 1, 4095), (1, 4096, 1, 4096)])
def test_encoding_is_protobufs_bytes(answers: list[tuple[int, int, int, int]]) -> None:
    encoder = tso_wire.ResponseEncoder()
    for cluster_id, count, physical, logical in answers:
        assert encoder(cluster_id, count, physical, logical) == protobuf_response(
            cluster_id, count, physical, logical
        )


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, (1 << 63) - 1, -1, -(1 << 63)])
def test_varint_is_protobufs(value: int) -> None:
    encoded = pdpb_pb2.Timestamp(physical=value).SerializeToString()
    assert (b"\x08" + tso_wire.varint(value) if value else b"") == encoded
