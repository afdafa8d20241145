"""A small typed asyncio client for the Kubernetes API on aiohttp: exactly what KubeStore,
the Lease roles and the operator need, and nothing that hides a resourceVersion.

* get / list / create / replace (PUT) / merge-patch / delete on a path, and `watch`,
  an async iterator of events from a resourceVersion. A PUT (or a patch) that carries
  `metadata.resourceVersion` is a compare-and-swap: a 409 `Conflict` means someone wrote
  first. Nothing here retries a 409 — deciding what to do is the caller's business.
* Errors are typed (`errors`): 404/409/410/422 each have a class carrying the server's
  message; no answer, a timeout or a 5xx is `Unavailable`. A 429 (the server did not
  process the request, e.g. a CRD's storage still initialising) is retried here after
  its Retry-After, a few times, because that is always safe.
* `Resource` names a group/version/plural once; paths stay plain strings so any API
  (core, apps, coordination) works the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pdcore.adapters.kube import config as kubeconfig
from pdcore.adapters.kube.errors import (
    ApiError,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    TooManyRequests,
    Unavailable,
    error_for,
)

__all__ = [
    "ApiError",
    "Conflict",
    "Gone",
    "Invalid",
    "KubeClient",
    "NotFound",
    "Obj",
    "ObjectList",
    "Resource",
    "TooManyRequests",
    "Unavailable",
    "WatchEvent",
    "crd_path",
]

Obj = dict[str, Any]
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
TOKEN_REREAD_S = 60.0


@dataclass(frozen=True, slots=True)
class Resource:
    """A kind of object on the API server, e.g. Resource("kubepd.io", "v1alpha1",
    "tikvstores"). The core group is group ""."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


def crd_path(
    namespace: str, plural: str, name: str = "", group: str = "kubepd.io", version: str = "v1alpha1"
) -> str:
    """The path of kubepd's custom resources (or one of them)."""
    return Resource(group, version, plural).path(namespace, name)


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: list[Obj]
    resource_version: str  # watch from here to see every change after the list


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Obj

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


def _ssl_context(creds: kubeconfig.Credentials) -> ssl.SSLContext:
    ctx = ssl.create_default_context(
        cafile=creds.ca_file,
        cadata=creds.ca_data.decode() if creds.ca_data else None,
    )
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if creds.cert_file and creds.key_file:
        ctx.load_cert_chain(creds.cert_file, creds.key_file)
    elif creds.cert_data and creds.key_data:
        # ssl only loads key pairs from files: write them to a private directory, load,
        # and remove them at once.
        with tempfile.TemporaryDirectory(prefix="kubepd-") as d:
            cert, key = Path(d, "tls.crt"), Path(d, "tls.key")
            for path, data in ((cert, creds.cert_data), (key, creds.key_data)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _retry_after(headers: Any) -> float:
    try:
        return max(0.05, min(float(headers.get("Retry-After", "1")), 5.0))
    except ValueError:
        return 1.0


class KubeClient:
    def __init__(
        self, creds: kubeconfig.Credentials, *, timeout_s: float = 10.0, busy_retries: int = 8
    ) -> None:
        self.creds = creds
        self.timeout_s = timeout_s
        self.busy_retries = busy_retries
        self._ssl = _ssl_context(creds)
        self._session: aiohttp.ClientSession | None = None
        self._token = creds.token
        self._token_read_at = -TOKEN_REREAD_S

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, context: str | None = None
    ) -> KubeClient:
        return cls(kubeconfig.load_kubeconfig(path, context))

    @classmethod
    def in_cluster(cls) -> KubeClient:
        return cls(kubeconfig.in_cluster())

    @classmethod
    def auto(cls, kubeconfig_path: str | None = None) -> KubeClient:
        """A kubeconfig if one is named or in $KUBECONFIG, else the pod's service account."""
        return cls(kubeconfig.auto(kubeconfig_path))

    @property
    def server(self) -> str:
        return self.creds.server.rstrip("/")

    @property
    def ca_file(self) -> str | None:
        return self.creds.ca_file

    @property
    def token(self) -> str | None:
        return self._bearer()

    def _bearer(self) -> str | None:
        if self.creds.token_file and time.monotonic() - self._token_read_at >= TOKEN_REREAD_S:
            with contextlib.suppress(OSError):
                self._token = Path(self.creds.token_file).read_text().strip()
                self._token_read_at = time.monotonic()
        return self._token

    def _headers(self, content_type: str | None, accept: str) -> dict[str, str]:
        h = {"Accept": accept}
        if content_type:
            h["Content-Type"] = content_type
        token = self._bearer()
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    # -- one request --------------------------------------------------------------------
    @staticmethod
    def _error(status: int, text: str, headers: Any, fallback_reason: str) -> ApiError:
        try:
            st = json.loads(text)
            reason = str(st.get("reason") or fallback_reason)
            message = str(st.get("message") or text)
        except (json.JSONDecodeError, AttributeError):
            reason, message = fallback_reason, text
        return error_for(status, reason, message, _retry_after(headers))

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> Obj:
        data = json.dumps(body) if body is not None else None
        for attempt in range(self.busy_retries + 1):
            try:
                return await self._once(method, path, data, content_type, params, accept)
            except TooManyRequests as e:
                if attempt == self.busy_retries:
                    raise
                await asyncio.sleep(e.retry_after_s)
        raise AssertionError("unreachable")

    async def _once(
        self,
        method: str,
        path: str,
        data: str | None,
        content_type: str,
        params: dict[str, str] | None,
        accept: str,
    ) -> Obj:
        sess = await self._sess()
        try:
            async with sess.request(
                method,
                self.server + path,
                data=data,
                ssl=self._ssl,
                params=params,
                headers=self._headers(content_type if data is not None else None, accept),
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise self._error(resp.status, text, resp.headers, resp.reason or "")
                out: Obj = json.loads(text) if text else {}
                return out
        except aiohttp.ClientError as e:
            raise Unavailable(0, "Unavailable", f"{method} {path}: {e}") from None
        except TimeoutError:
            raise Unavailable(0, "Timeout", f"{method} {path} timed out") from None

    # -- verbs --------------------------------------------------------------------------
    async def get(self, path: str, *, accept: str = "application/json") -> Obj:
        return await self.request("GET", path, accept=accept)

    async def table(self, path: str) -> Obj:
        """The server-side Table (printer columns) of an object or a list."""
        return await self.get(path, accept=TABLE)

    async def list_objects(
        self, path: str, *, label_selector: str = "", field_selector: str = "", page: int = 500
    ) -> ObjectList:
        """Every matching object, page by page, and the list's resourceVersion."""
        items: list[Obj] = []
        cont = ""
        while True:
            params = {"limit": str(page)}
            if label_selector:
                params["labelSelector"] = label_selector
            if field_selector:
                params["fieldSelector"] = field_selector
            if cont:
                params["continue"] = cont
            try:
                out = await self.request("GET", path, params=params)
            except Gone:
                if not cont:
                    raise
                items, cont = [], ""  # the continue token expired: start over
                continue
            items.extend(out.get("items", []))
            meta = out.get("metadata", {})
            cont = meta.get("continue", "")
            if not cont:
                return ObjectList(items, str(meta.get("resourceVersion", "")))

    async def list(
        self, path: str, label_selector: str = "", field_selector: str = ""
    ) -> list[Obj]:
        listing = await self.list_objects(
            path, label_selector=label_selector, field_selector=field_selector
        )
        return listing.items

    async def create(self, path: str, body: Obj) -> Obj:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: Obj) -> Obj:
        """PUT. With body.metadata.resourceVersion set, a compare-and-swap (409 if stale)."""
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Obj) -> Obj:
        """JSON merge patch. With metadata.resourceVersion in the body, also CAS-checked."""
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> Obj:
        return await self.request("DELETE", path)

    async def watch(
        self,
        path: str,
        resource_version: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        timeout_s: int = 300,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after `resource_version` until the server ends the watch (normally after
        about `timeout_s`). Raises Gone when that version is too old (list again), and
        yields BOOKMARK events so a quiet watch still advances its resourceVersion."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        sess = await self._sess()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout_s, sock_read=timeout_s + self.timeout_s
        )
        try:
            async with sess.get(
                self.server + path,
                params=params,
                ssl=self._ssl,
                headers=self._headers(None, "application/json"),
                timeout=timeout,
            ) as resp:
                if resp.status >= 400:
                    raise self._error(
                        resp.status, await resp.text(), resp.headers, resp.reason or ""
                    )
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield self._event(json.loads(line))
        except aiohttp.ClientError as e:
            raise Unavailable(0, "Unavailable", f"watch {path}: {e}") from None
        except TimeoutError:
            raise Unavailable(0, "Timeout", f"watch {path}: no data") from None

    @staticmethod
    def _event(raw: Obj) -> WatchEvent:
        kind, obj = str(raw.get("type", "")), raw.get("object") or {}
        if kind == "ERROR":
            raise error_for(
                int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", ""))
            )
        return WatchEvent(kind, obj)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
