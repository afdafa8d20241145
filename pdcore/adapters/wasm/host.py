"""Run Wasm scheduling policies in a sandbox (wasmtime).

Modules are compiled once per engine and cached by sha256. Every call gets a fuel
budget (deterministic), a memory limit, and a wall-clock deadline through epoch
interruption (one ticker thread for the engine). An instance is kept per policy and
reset between runs; after any failure it is thrown away. Guest misbehaviour never
raises into the caller: it comes back as a PolicyFailure with a kind.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import wasmtime

from pdcore.policy.abi import ABI_VERSION, ProposalFormatError, decode_proposals
from pdcore.policy.outcome import FailureKind, PolicyFailure, PolicyResult, RunOutcome
from pdcore.policy.spec import PolicySpec

__all__ = ["Limits", "PolicyFailure", "PolicyInstance", "PolicyLoadError", "PolicyResult"]

EPOCH_TICK_S = 0.01
REQUIRED_EXPORTS = (
    "memory",
    "kubepd_abi_version",
    "kubepd_alloc",
    "kubepd_reset",
    "kubepd_schedule",
)


# Traps whose code says more than "the guest trapped".
TRAP_KINDS = {
    wasmtime.TrapCode.OUT_OF_FUEL: FailureKind.FUEL,
    wasmtime.TrapCode.INTERRUPT: FailureKind.DEADLINE,
    wasmtime.TrapCode.ALLOCATION_TOO_LARGE: FailureKind.MEMORY,
}


class PolicyLoadError(Exception):
    """The module cannot be used: bad bytes, digest mismatch, missing exports, wrong ABI."""


@dataclass(frozen=True, slots=True)
class Limits:
    fuel: int = 100_000_000
    memory_bytes: int = 64 << 20
    timeout_ms: int = 500
    max_proposals: int = 64


class _Ticker:
    """Advances an engine's epoch every EPOCH_TICK_S: the clock deadlines count in."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(EPOCH_TICK_S):
            self.engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()


class WasmHost:
    def __init__(self) -> None:
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        self.engine = wasmtime.Engine(cfg)
        self._modules: dict[str, wasmtime.Module] = {}
        self.compiles = 0
        self._ticker = _Ticker(self.engine)

    def compile(self, wasm: bytes) -> tuple[str, wasmtime.Module]:
        digest = hashlib.sha256(wasm).hexdigest()
        module = self._modules.get(digest)
        if module is None:
            try:
                module = wasmtime.Module(self.engine, wasm)
            except wasmtime.WasmtimeError as e:
                raise PolicyLoadError(
                    f"not a valid Wasm module: {str(e).splitlines()[0]}"
                ) from None
            names = {e.name for e in module.exports}
            missing = [n for n in REQUIRED_EXPORTS if n not in names]
            if missing:
                raise PolicyLoadError(f"module does not export {', '.join(missing)}")
            self.compiles += 1
            self._modules[digest] = module
        return digest, module

    def close(self) -> None:
        self._ticker.stop()


class PolicyInstance:
    """One loaded policy: its module, limits, and a reusable instance."""

    def __init__(self, host: WasmHost, wasm: bytes, limits: Limits) -> None:
        self.host = host
        self.limits = limits
        self.digest, self.module = host.compile(wasm)
        self._store: wasmtime.Store | None = None
        self._exports: dict[str, Any] = {}
        self._logs: list[str] = []
        self._lock = threading.Lock()
        self._instantiate()
        version = self._call("kubepd_abi_version")
        if version != ABI_VERSION:
            raise PolicyLoadError(
                f"module speaks ABI version {version}; this host speaks {ABI_VERSION}"
            )

    def _instantiate(self) -> None:
        store = wasmtime.Store(self.host.engine)
        store.set_limits(memory_size=self.limits.memory_bytes)
        store.set_fuel(self.limits.fuel)
        store.set_epoch_deadline(max(1, self.limits.timeout_ms // int(EPOCH_TICK_S * 1000)))
        linker = wasmtime.Linker(self.host.engine)

        def log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
            mem = caller.get("memory")
            if isinstance(mem, wasmtime.Memory) and 0 <= length <= 1024 and len(self._logs) < 100:
                data = mem.read(caller, ptr, ptr + length)
                self._logs.append(bytes(data).decode("utf-8", errors="replace"))

        linker.define_func(
            "kubepd",
            "log",
            wasmtime.FuncType([wasmtime.ValType.i32()] * 3, []),
            log,
            access_caller=True,
        )
        instance = linker.instantiate(store, self.module)
        self._store = store
        self._exports = {name: instance.exports(store)[name] for name in REQUIRED_EXPORTS}

    def _call(self, name: str, *args: int) -> Any:
        assert self._store is not None
        return self._exports[name](self._store, *args)

    def run(self, snapshot: bytes) -> RunOutcome:
        """One policy run; thread-safe (runs are serialised per instance)."""
        with self._lock:
            return self._run(snapshot)

    def _run(self, snapshot: bytes) -> RunOutcome:
        t0 = time.perf_counter()
        if self._store is None:
            self._instantiate()
        store = self._store
        assert store is not None
        self._logs = []
        store.set_fuel(self.limits.fuel)
        store.set_epoch_deadline(max(1, self.limits.timeout_ms // int(EPOCH_TICK_S * 1000)))
        mem: wasmtime.Memory = self._exports["memory"]
        try:
            self._call("kubepd_reset")
            ptr = self._call("kubepd_alloc", len(snapshot))
            if not ptr:
                return self._fail(
                    FailureKind.MEMORY,
                    f"the module could not allocate {len(snapshot)} bytes for the snapshot",
                    t0,
                )
            mem.write(store, snapshot, ptr)
            packed = self._call("kubepd_schedule", ptr, len(snapshot))
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            return self._trap(e, t0)
        except (IndexError, ValueError) as e:
            return self._fail(
                FailureKind.MEMORY, f"snapshot does not fit the module's memory: {e}", t0
            )
        out_ptr, out_len = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
        size = mem.data_len(store)
        if out_ptr + out_len > size or out_len > 16 << 20:
            return self._fail(
                FailureKind.MALFORMED_OUTPUT,
                f"proposals at {out_ptr}+{out_len} lie outside memory of {size} bytes",
                t0,
            )
        data = bytes(mem.read(store, out_ptr, out_ptr + out_len))
        try:
            proposals = decode_proposals(data, self.limits.max_proposals)
        except ProposalFormatError as e:
            return self._fail(FailureKind.MALFORMED_OUTPUT, str(e), t0)
        fuel_left = store.get_fuel()
        return PolicyResult(
            proposals, self.limits.fuel - fuel_left, (time.perf_counter() - t0) * 1000, self._logs
        )

    def _trap(self, e: Exception, t0: float) -> PolicyFailure:
        """Classify by the trap's code; a guest that traps (commonly `unreachable`)
        after its memory could not grow any further ran out of memory."""
        code = e.trap_code if isinstance(e, wasmtime.Trap) else None
        kind = TRAP_KINDS.get(code, FailureKind.TRAP) if code is not None else FailureKind.TRAP
        if kind == FailureKind.TRAP and self._memory_full():
            kind = FailureKind.MEMORY
        return self._fail(kind, " ".join(str(e).split())[:300] or kind, t0)

    def _memory_full(self) -> bool:
        try:
            assert self._store is not None
            mem: wasmtime.Memory = self._exports["memory"]
            return mem.data_len(self._store) + 256 * 65536 > self.limits.memory_bytes
        except Exception:
            return False

    def _fail(self, kind: FailureKind, message: str, t0: float) -> PolicyFailure:
        self._store = None  # never reuse an instance that misbehaved
        return PolicyFailure(kind, message, (time.perf_counter() - t0) * 1000)


def instantiate(host: WasmHost, spec: PolicySpec) -> PolicyInstance:
    """The sandbox for a validated spec; PolicyLoadError says why the module is refused
    (it does not compile, lacks an export, speaks another ABI, traps when started)."""
    limits = Limits(spec.fuel, spec.memory_bytes, spec.timeout_ms, spec.max_proposals)
    try:
        return PolicyInstance(host, spec.module, limits)
    except PolicyLoadError:
        raise
    except Exception as e:  # a trap at instantiation, limits below the module's needs
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise PolicyLoadError(f"the module could not be instantiated: {first}") from None
