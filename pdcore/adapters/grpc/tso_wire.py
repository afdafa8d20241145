"""TsoRequest and TsoResponse as bytes, for the Tso stream's fast path.

A TSO client sends the same small request over and over: its header bytes never change
within a stream, only the count does. `RequestDecoder` remembers the last header it saw
(as bytes, with the cluster id protobuf read from it) and, when the next request is that
header followed by a one- to three-byte count field, answers without building a message.
Anything else — another shape, a dc_location, unknown fields, garbage — goes to protobuf,
so what a request means is always what protobuf says it means (the unit tests compare
both on generated and mangled inputs).

`ResponseEncoder` writes the response protobuf would write for the servicer's
`TsoResponse(count=..., header.cluster_id=..., timestamp.physical/logical=...)`: fields in
number order, zero scalars left out, both sub-messages always present. Its header prefix
is kept per cluster id, the physical field per millisecond.

Measured on this machine: decoding about 0.5 µs instead of 1.3 µs, encoding about 0.5 µs
instead of 2 to 5 µs (numbers in docs/benchmarks.md). Pure: no I/O, no grpc.
"""

from __future__ import annotations

from pdcore.proto import pdpb_pb2

_U64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint; negative int64 values as their 64-bit two's complement."""
    if 0 <= value < 0x80:
        return bytes((value,))
    if 0 <= value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class RequestDecoder:
    """`decoder(data) -> (cluster_id, count)`; raises protobuf's DecodeError as
    `TsoRequest.FromString` would. One per server: the remembered header is a cache,
    never a meaning of its own."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        # Field 1 (tag, length, bytes) exactly as last seen, and the cluster id protobuf
        # read from those bytes: one value, so the two are never read from two updates.
        self._known = (b"", 0)

    def __call__(self, data: bytes) -> tuple[int, int]:
        head, cluster_id = self._known
        if head and data.startswith(head):
            rest = len(data) - len(head)
            at = len(head)
            # field 2 (count), varint of one to three bytes, and nothing after it
            if rest == 2 and data[at] == 0x10 and data[at + 1] < 0x80:
                return cluster_id, data[at + 1]
            if rest == 3 and data[at] == 0x10 and data[at + 1] & 0x80 and data[at + 2] < 0x80:
                return cluster_id, (data[at + 1] & 0x7F) | (data[at + 2] << 7)
            if (
                rest == 4
                and data[at] == 0x10
                and data[at + 1] & 0x80
                and data[at + 2] & 0x80
                and data[at + 3] < 0x80
            ):
                count = (data[at + 1] & 0x7F) | (data[at + 2] & 0x7F) << 7 | data[at + 3] << 14
                return cluster_id, count
        req = pdpb_pb2.TsoRequest.FromString(data)
        self._remember(data)
        return req.header.cluster_id, req.count

    def _remember(self, data: bytes) -> None:
        """Keep this request's header bytes when it starts with one short header field."""
        if len(data) < 2 or data[0] != 0x0A or data[1] >= 0x80:
            return
        end = 2 + data[1]
        if end > len(data):
            return
        header = pdpb_pb2.RequestHeader.FromString(data[2:end])
        self._known = (data[:end], header.cluster_id)


def _field2(value: int) -> bytes:
    """Field 2 as a varint (TsoResponse.count, Timestamp.logical); zero is left out."""
    return b"\x10" + varint(value) if value else b""


# Both counts and logical parts are mostly small: their field bytes, made once.
_FIELD2 = tuple(_field2(v) for v in range(1 << 12))
_TIMESTAMP_TAG = tuple(b"\x1a" + bytes((n,)) for n in range(0x80))  # field 3, length n


class ResponseEncoder:
    """`encoder(cluster_id, count, physical, logical) -> bytes`, equal to protobuf's
    serialization of the same TsoResponse (non-negative values)."""

    __slots__ = ("_cluster_id", "_physical", "_physical_field", "_prefix")

    def __init__(self) -> None:
        self._cluster_id = -1
        self._prefix = b""
        self._physical = -1
        self._physical_field = b""

    def __call__(self, cluster_id: int, count: int, physical: int, logical: int) -> bytes:
        if cluster_id != self._cluster_id:
            inner = b"\x08" + varint(cluster_id) if cluster_id else b""
            self._cluster_id, self._prefix = cluster_id, b"\x0a" + varint(len(inner)) + inner
        if physical != self._physical:
            self._physical = physical
            self._physical_field = b"\x08" + varint(physical) if physical else b""
        ts = self._physical_field + (_FIELD2[logical] if logical < 4096 else _field2(logical))
        return (
            self._prefix
            + (_FIELD2[count] if count < 4096 else _field2(count))
            + _TIMESTAMP_TAG[len(ts)]
            + ts
        )
