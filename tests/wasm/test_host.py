"""The Wasm host: example policies decide what they should, hostile ones are contained
and reported with the right kind, and the host keeps working afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdcore.adapters.wasm.host import (
    Limits,
    PolicyFailure,
    PolicyInstance,
    PolicyLoadError,
    PolicyResult,
    WasmHost,
)
from pdcore.policy import abi
from pdcore.policy.abi import (
    PeerView,
    PolicyInput,
    Proposal,
    ProposalFormatError,
    ProposalKind,
    RegionFlag,
    RegionView,
    StoreFlag,
    StoreView,
    decode_proposals,
    encode_proposals,
    encode_snapshot,
)
from pdcore.policy.outcome import FailureKind

OK = StoreFlag.UP | StoreFlag.LEADER_TARGET | StoreFlag.REGION_TARGET


@pytest.fixture(scope="module")
def host() -> WasmHost:
    return WasmHost()


def snapshot(
    leaders: list[int],
    slow: int = 0,
    zones: list[int] | None = None,
    config: dict[str, object] | None = None,
) -> bytes:
    stores = [
        StoreView(
            i + 1,
            n,
            30,
            3000,
            int(OK),
            90 if i + 1 == slow else 1,
            (zones or [0] * len(leaders))[i],
        )
        for i, n in enumerate(leaders)
    ]
    regions, rid = [], 100
    for i, n in enumerate(leaders):
        for _ in range(n):
            peers = tuple(
                PeerView(sid, 0)
                for sid in sorted({i + 1, *(s.id for s in stores[:3] if s.id != i + 1)})[:3]
            )
            regions.append(RegionView(rid, 3, 1, i + 1, 96, int(RegionFlag.HEALTHY), peers))
            rid += 1
    return encode_snapshot(PolicyInput(stores, regions, config or {}))


def load(host: WasmHost, path: Path, **limits: int) -> PolicyInstance:
    return PolicyInstance(host, path.read_bytes(), Limits(**limits))  # type: ignore[arg-type]


def test_balance_leader_moves_leaders_off_the_busiest_store(host: WasmHost, policies: Path) -> None:
    p = load(host, policies / "balance_leader.wasm")
    result = p.run(snapshot([20, 0, 0], config={"batch": 6, "tolerance": 1}))
    assert isinstance(result, PolicyResult), result
    assert len(result.proposals) == 6
    assert all(
        x.kind == ProposalKind.TRANSFER_LEADER and x.source_store == 1 for x in result.proposals
    )
    assert {x.target_store for x in result.proposals} == {2, 3}
    assert p.run(snapshot([5, 5, 5])).proposals == []  # type: ignore[union-attr]


def test_evict_slow_store_and_zone_preference(host: WasmHost, policies: Path) -> None:
    evict = load(host, policies / "evict_slow_store.wasm").run(snapshot([4, 4, 4], slow=2))
    assert isinstance(evict, PolicyResult)
    assert len(evict.proposals) == 4 and all(
        x.source_store == 2 and x.target_store != 2 for x in evict.proposals
    )
    zone = load(host, policies / "zone_preference.wasm").run(
        snapshot([3, 3, 3], zones=[0, 1, 1], config={"batch": 16, "zone": 0})
    )
    assert isinstance(zone, PolicyResult)
    assert len(zone.proposals) == 6 and all(x.target_store == 1 for x in zone.proposals)


@pytest.mark.parametrize(
    ("module", "kind", "limits"),
    [
        ("loop.wat", "deadline", {"fuel": 10**12, "timeout_ms": 100}),
        ("loop.wat", "fuel", {"fuel": 100_000, "timeout_ms": 5000}),
        ("membomb.wat", "memory", {"memory_bytes": 8 << 20}),
        ("trap.wat", "trap", {}),
        ("garbage.wat", "malformed_output", {}),
        ("badmagic.wat", "malformed_output", {}),
    ],
)
def test_hostile_modules_are_contained(
    host: WasmHost, policies: Path, module: str, kind: str, limits: dict[str, int]
) -> None:
    p = load(host, policies / module, **limits)
    t0 = time.monotonic()
    result = p.run(snapshot([3, 3, 3]))
    assert isinstance(result, PolicyFailure) and result.kind == kind, result
    assert time.monotonic() - t0 < 6.0
    again = p.run(snapshot([3, 3, 3]))  # a fresh instance, contained the same way
    assert isinstance(again, PolicyFailure)
    good = load(host, policies / "balance_leader.wasm").run(snapshot([20, 0, 0]))
    assert isinstance(good, PolicyResult) and good.proposals


def test_wrong_abi_and_garbage_refused_at_load(host: WasmHost, policies: Path) -> None:
    with pytest.raises(PolicyLoadError, match="ABI version 99"):
        load(host, policies / "wrong_abi.wat")
    with pytest.raises(PolicyLoadError, match="not a valid Wasm"):
        PolicyInstance(host, b"\0asm garbage", Limits())


def test_modules_compile_once(policies: Path) -> None:
    h = WasmHost()
    wasm = (policies / "balance_leader.wasm").read_bytes()
    PolicyInstance(h, wasm, Limits())
    PolicyInstance(h, wasm, Limits())
    assert h.compiles == 1


props = st.lists(
    st.builds(
        Proposal,
        st.sampled_from(list(ProposalKind)),
        st.integers(0, 2**63),
        st.integers(0, 2**31),
        st.integers(0, 2**31),
        st.integers(0, 2**63),
        st.integers(0, 2**63),
        st.text(max_size=40),
    ),
    max_size=20,
)


@given(props)
def test_proposals_round_trip(ps: list[Proposal]) -> None:
    assert decode_proposals(encode_proposals(ps), 64) == ps


# Garbage, and garbage behind a valid header (so decoding gets past the magic).
_garbage = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda n, body: abi.PROP_HEADER.pack(abi.PROPOSALS_MAGIC, n) + body,
        st.integers(0, 3),
        st.binary(max_size=300),
    ),
)


@given(_garbage)
def test_garbage_never_decodes_silently(data: bytes) -> None:
    """Bad bytes raise ProposalFormatError (nothing else); bytes that do decode say
    exactly what was decoded: the header's count of valid proposals, which encode back
    to a buffer that decodes the same."""
    try:
        got = decode_proposals(data, 64)
    except ProposalFormatError as e:
        assert str(e)  # says what was wrong
        return
    magic, count = abi.PROP_HEADER.unpack_from(data, 0)
    assert magic == abi.PROPOSALS_MAGIC and len(got) == count
    assert all(isinstance(p.kind, ProposalKind) for p in got)
    assert decode_proposals(encode_proposals(got), 64) == got


def test_traps_are_classified_by_code_not_by_their_text(host: WasmHost, policies: Path) -> None:
    """A plain trap in functions whose names (in the trap's backtrace) say "fuel",
    "epoch" and "memory grow" is still a trap: the kind comes from the trap code."""
    wat = (policies / "trap.wat").read_text()
    misleading = wat.replace(
        '(func (export "kubepd_schedule") (param i32 i32) (result i64) unreachable)',
        "(func $out_of_fuel_epoch_interrupt_memory_grow (unreachable))\n"
        '  (func (export "kubepd_schedule") (param i32 i32) (result i64)\n'
        "    (call $out_of_fuel_epoch_interrupt_memory_grow) (i64.const 0))",
    )
    assert misleading != wat
    result = PolicyInstance(host, misleading.encode(), Limits()).run(snapshot([3, 3, 3]))
    assert isinstance(result, PolicyFailure), result
    assert "out_of_fuel_epoch" in result.message  # the text does say it...
    assert result.kind == FailureKind.TRAP  # ...the code does not
