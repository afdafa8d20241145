"""Where a SchedulingPolicy's Wasm module comes from (`spec.module`): inline base64, a
ConfigMap key (`binaryData`, or `data` for WAT text), or an http(s) URL whose content
must match `spec.module.sha256`. `oci://` references are refused as not supported yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import aiohttp

from pdcore.adapters.kube import kinds
from pdcore.adapters.kube.client import ApiError, KubeClient, NotFound, Obj

FETCH_TIMEOUT_S = 30.0
MAX_MODULE_BYTES = 64 << 20


class ModuleUnavailable(Exception):
    """The module's bytes cannot be had; `retry`: the cause may go away by itself (a
    ConfigMap not created yet, a web server down), so the source is read again later."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def digest_of(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


class ModuleSources:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def read(self, module: Obj) -> bytes:
        """The bytes `spec.module` names (PolicySpec checks them against its sha256)."""
        if "inline" in module:
            try:
                wasm = base64.b64decode(module["inline"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ModuleUnavailable("spec.module.inline is not base64") from None
        elif "configMapRef" in module:
            wasm = await self._from_config_map(module["configMapRef"])
        elif "url" in module:
            wasm = await self._from_url(str(module["url"]))
        else:
            raise ModuleUnavailable("spec.module names no source (inline, configMapRef, url)")
        if not wasm:
            raise ModuleUnavailable("the module is empty")
        return wasm

    async def _from_config_map(self, ref: Obj) -> bytes:
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        try:
            cm = await self.client.get(kinds.CONFIG_MAPS.path(self.namespace, name))
        except NotFound:
            raise ModuleUnavailable(f"ConfigMap {name} not found", retry=True) from None
        except ApiError as e:
            raise ModuleUnavailable(f"ConfigMap {name} not read: {e}", retry=True) from None
        binary, text = cm.get("binaryData") or {}, cm.get("data") or {}
        if key in binary:
            try:
                return base64.b64decode(binary[key], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ModuleUnavailable(
                    f"ConfigMap {name} binaryData.{key} is not base64"
                ) from None
        if key in text:
            return str(text[key]).encode()  # WAT text: wasmtime compiles it too
        raise ModuleUnavailable(
            f"ConfigMap {name} has no key {key} in binaryData or data", retry=True
        )

    async def _from_url(self, url: str) -> bytes:
        if url.startswith("oci://"):
            raise ModuleUnavailable(
                "oci:// modules are not supported yet; use inline, configMapRef or an "
                "http(s) url with its sha256"
            )
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        data = bytearray()
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(url) as resp,
            ):
                if resp.status != 200:
                    raise ModuleUnavailable(f"GET {url}: HTTP {resp.status}", retry=True)
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > MAX_MODULE_BYTES:
                        raise ModuleUnavailable(
                            f"GET {url}: the module is larger than {MAX_MODULE_BYTES} bytes"
                        )
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ModuleUnavailable(
                f"GET {url}: {str(e) or type(e).__name__}", retry=True
            ) from None
        return bytes(data)
