"""ABI v1 between kubepd and a Wasm scheduling policy (docs/wasm-abi.md).

Everything is little-endian fixed-size records so a policy written in C without libc
can walk 100,000 regions without parsing: a header, then tables of stores, regions and
peers, then the policy's JSON config. The policy answers with a proposals buffer. No
Python object ever crosses the boundary.
"""

from __future__ import annotations

import enum
import json
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

ABI_VERSION = 1
SNAPSHOT_MAGIC = 0x5044504B  # "KPDP"
PROPOSALS_MAGIC = 0x5244504B  # "KPDR"
N_PARAMS = 8
NO_LABEL = 0xFFFFFFFF

HEADER = struct.Struct("<12I8q")  # 112 bytes
STORE = struct.Struct("<Q8I")  # 40 bytes
REGION = struct.Struct("<QIIQIIII")  # 40 bytes
PEER = struct.Struct("<QII")  # 16 bytes
PROP_HEADER = struct.Struct("<II")
PROPOSAL = struct.Struct("<IIQIIQQII")  # 48 bytes

# A REGION record as u32 words: flags is word 7, peer_off word 8, peer_count word 9.
_U32 = next(t for t in "IL" if array(t).itemsize == 4)
_REGION_WORDS = REGION.size // 4
_FLAGS_WORD, _PEER_OFF_WORD, _PEER_COUNT_WORD = 7, 8, 9


class StoreFlag(enum.IntFlag):
    UP = 1
    DOWN = 2  # down or disconnected
    OFFLINE = 4
    BUSY = 8
    LEADER_TARGET = 16  # passes the host's leader-target filters
    REGION_TARGET = 32  # passes the host's region-target filters
    SLOW = 64


class RegionFlag(enum.IntFlag):
    HEALTHY = 1  # no down or pending peers
    HAS_OPERATOR = 2


class ProposalKind(enum.IntEnum):
    TRANSFER_LEADER = 1
    MOVE_PEER = 2
    ADD_LEARNER = 3
    REMOVE_PEER = 4


class StoreView(NamedTuple):
    id: int
    leader_count: int
    region_count: int
    region_size: int
    flags: int
    slow_score: int = 0
    label_id: int = NO_LABEL


class PeerView(NamedTuple):
    store_id: int
    role: int  # metapb.PeerRole


class RegionView(NamedTuple):
    id: int
    conf_ver: int
    version: int
    leader_store: int
    size_mib: int
    flags: int
    peers: tuple[PeerView, ...]


@dataclass(frozen=True, slots=True)
class Proposal:
    kind: ProposalKind
    region_id: int
    conf_ver: int
    version: int
    source_store: int
    target_store: int
    reason: str


class ProposalFormatError(ValueError):
    """The policy's output does not follow ABI v1."""


@dataclass
class PolicyInput:
    stores: Sequence[StoreView]
    regions: Sequence[RegionView]
    config: dict[str, Any] = field(default_factory=dict)
    label_values: dict[str, int] = field(default_factory=dict)
    max_proposals: int = 64


def params_of(config: dict[str, Any], label_values: dict[str, int]) -> list[int]:
    """The config as 8 integers for policies that do not parse JSON: the values in sorted
    key order; numbers as they are (floats x1000), strings as label value ids."""
    out: list[int] = []
    for key in sorted(config):
        v = config[key]
        if isinstance(v, bool):
            out.append(int(v))
        elif isinstance(v, int):
            out.append(v)
        elif isinstance(v, float):
            out.append(int(v * 1000))
        elif isinstance(v, str):
            out.append(label_values.get(v, NO_LABEL))
        if len(out) == N_PARAMS:
            break
    return out + [0] * (N_PARAMS - len(out))


def _pack_head(
    buf: bytearray, inp: PolicyInput, n_regions: int, n_peers: int, config: bytes
) -> tuple[int, int, int]:
    """Header and store table into `buf`; (regions_off, peers_off, config_off)."""
    stores_off = HEADER.size
    regions_off = stores_off + STORE.size * len(inp.stores)
    peers_off = regions_off + REGION.size * n_regions
    config_off = peers_off + PEER.size * n_peers
    HEADER.pack_into(
        buf,
        0,
        SNAPSHOT_MAGIC,
        ABI_VERSION,
        len(inp.stores),
        n_regions,
        n_peers,
        inp.max_proposals,
        config_off,
        len(config),
        stores_off,
        regions_off,
        peers_off,
        0,
        *params_of(inp.config, inp.label_values),
    )
    off = stores_off
    for s in inp.stores:
        STORE.pack_into(
            buf,
            off,
            s.id,
            s.leader_count,
            s.region_count,
            s.region_size,
            s.flags,
            s.slow_score,
            s.label_id,
            0,
            0,
        )
        off += STORE.size
    return regions_off, peers_off, config_off


def encode_snapshot(inp: PolicyInput) -> bytes:
    config = json.dumps(inp.config, sort_keys=True).encode()
    n_peers = sum(len(r.peers) for r in inp.regions)
    regions_off = HEADER.size + STORE.size * len(inp.stores)
    config_off = regions_off + REGION.size * len(inp.regions) + PEER.size * n_peers
    buf = bytearray(config_off + len(config))
    regions_off, peers_off, config_off = _pack_head(buf, inp, len(inp.regions), n_peers, config)
    off, poff, pidx = regions_off, peers_off, 0
    for r in inp.regions:
        REGION.pack_into(
            buf,
            off,
            r.id,
            r.conf_ver,
            r.version,
            r.leader_store,
            r.size_mib,
            r.flags,
            pidx,
            len(r.peers),
        )
        off += REGION.size
        for p in r.peers:
            PEER.pack_into(buf, poff, p.store_id, p.role, 0)
            poff += PEER.size
        pidx += len(r.peers)
    buf[config_off:] = config
    return bytes(buf)


def region_record(
    region_id: int,
    conf_ver: int,
    version: int,
    leader_store: int,
    size_mib: int,
    flags: int,
    peer_count: int,
) -> bytes:
    """One REGION record with `peer_off` left 0: `assemble_snapshot` fills it in."""
    return REGION.pack(region_id, conf_ver, version, leader_store, size_mib, flags, 0, peer_count)


def peer_records(peers: Iterable[tuple[int, int]]) -> bytes:
    """The PEER records of one region, from (store_id, role) pairs."""
    return b"".join([PEER.pack(store_id, role, 0) for store_id, role in peers])


def assemble_snapshot(
    inp: PolicyInput,
    region_records: bytes,
    peer_table: bytes,
    with_operator: Iterable[int] = (),
) -> bytes:
    """The bytes `encode_snapshot` makes, from REGION records already encoded (as
    `region_record` makes them, in snapshot order) and the PEER records of those regions
    concatenated in the same order; `inp.regions` is ignored. `peer_off` is computed here,
    so a cached record stays valid when regions before it change; `with_operator` are the
    indexes of the regions whose HAS_OPERATOR flag is set on top of their record's."""
    if len(region_records) % REGION.size:
        raise ValueError("region records are not a whole number of records")
    words = array(_U32, region_records)
    big = sys.byteorder == "big"
    if big:  # pragma: no cover - every supported platform is little-endian
        words.byteswap()
    n_regions = len(words) // _REGION_WORDS
    peer_off = array(_U32, accumulate(words[_PEER_COUNT_WORD::_REGION_WORDS], initial=0))
    n_peers = peer_off.pop()
    if len(peer_table) != n_peers * PEER.size:
        raise ValueError(f"{n_peers} peers need {n_peers * PEER.size} bytes, got {len(peer_table)}")
    words[_PEER_OFF_WORD::_REGION_WORDS] = peer_off
    for i in with_operator:
        words[i * _REGION_WORDS + _FLAGS_WORD] |= int(RegionFlag.HAS_OPERATOR)
    if big:  # pragma: no cover
        words.byteswap()
    config = json.dumps(inp.config, sort_keys=True).encode()
    head = bytearray(HEADER.size + STORE.size * len(inp.stores))
    _pack_head(head, inp, n_regions, n_peers, config)
    return b"".join((head, words, peer_table, config))


def decode_proposals(data: bytes, max_proposals: int) -> list[Proposal]:
    if len(data) < PROP_HEADER.size:
        raise ProposalFormatError(
            f"proposals buffer of {len(data)} bytes is shorter than its header"
        )
    magic, count = PROP_HEADER.unpack_from(data, 0)
    if magic != PROPOSALS_MAGIC:
        raise ProposalFormatError(f"bad proposals magic {magic:#x}")
    if count > max_proposals:
        raise ProposalFormatError(f"{count} proposals exceed the limit of {max_proposals}")
    end = PROP_HEADER.size + count * PROPOSAL.size
    if len(data) < end:
        raise ProposalFormatError(f"{count} proposals need {end} bytes, got {len(data)}")
    out = []
    for i in range(count):
        kind, _, rid, conf, ver, src, dst, roff, rlen = PROPOSAL.unpack_from(
            data, PROP_HEADER.size + i * PROPOSAL.size
        )
        try:
            k = ProposalKind(kind)
        except ValueError:
            raise ProposalFormatError(f"proposal {i}: unknown kind {kind}") from None
        if roff + rlen > len(data) or rlen > 512:
            raise ProposalFormatError(f"proposal {i}: reason is out of bounds")
        reason = data[roff : roff + rlen].decode("utf-8", errors="replace")
        out.append(Proposal(k, rid, conf, ver, src, dst, reason))
    return out


def encode_proposals(props: Sequence[Proposal]) -> bytes:
    """The guest side, in Python: for tests and the Python baseline."""
    reasons = [p.reason.encode() for p in props]
    base = PROP_HEADER.size + PROPOSAL.size * len(props)
    buf = bytearray(base + sum(len(r) for r in reasons))
    PROP_HEADER.pack_into(buf, 0, PROPOSALS_MAGIC, len(props))
    off = base
    for i, (p, r) in enumerate(zip(props, reasons, strict=True)):
        PROPOSAL.pack_into(
            buf,
            PROP_HEADER.size + i * PROPOSAL.size,
            int(p.kind),
            0,
            p.region_id,
            p.conf_ver,
            p.version,
            p.source_store,
            p.target_store,
            off,
            len(r),
        )
        buf[off : off + len(r)] = r
        off += len(r)
    return bytes(buf)
