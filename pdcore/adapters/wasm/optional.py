"""The Wasm host where wasmtime is installed: every host process asks here, so a missing
wasmtime turns policies off with one warning instead of failing the process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pdcore.adapters.wasm.host import WasmHost

log = logging.getLogger("kubepd.wasm")


def wasm_host(what: str) -> WasmHost | None:
    """A new Wasm host, or None (with a warning naming `what` is off) without wasmtime."""
    try:
        from pdcore.adapters.wasm.host import WasmHost
    except ImportError:
        log.warning("wasmtime not available; %s are off", what)
        return None
    return WasmHost()
