"""A small typed asyncio client for the Kubernetes API (aiohttp), enough for KubeStore
and Lease election: get, list, create, replace, merge-patch, delete, with the API
server's errors mapped to exceptions that carry its message."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import yaml

Obj = dict[str, Any]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: the object changed since it was read (or already exists)."""


class Gone(ApiError):
    pass


class Invalid(ApiError):
    """422: the object failed validation; `message` says what is wrong."""


class Unavailable(ApiError):
    """The API server could not be reached."""


_ERRORS = {404: NotFound, 409: Conflict, 410: Gone, 422: Invalid}


class KubeClient:
    def __init__(
        self,
        server: str,
        token: str | None,
        ca_file: str | None,
        cert: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.ca_file = ca_file
        ctx = (
            ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        )
        if cert is not None:
            ctx.load_cert_chain(cert[0], cert[1])
        self._ssl = ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None) -> KubeClient:
        path = path or os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
        cfg = yaml.safe_load(Path(path).read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        cert = (
            (user["client-certificate"], user["client-key"])
            if "client-certificate" in user
            else None
        )
        return cls(cluster["server"], user.get("token"), cluster.get("certificate-authority"), cert)

    @classmethod
    def in_cluster(cls) -> KubeClient:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        return cls(
            f"https://{host}:{port}", (SA_DIR / "token").read_text().strip(), str(SA_DIR / "ca.crt")
        )

    @classmethod
    def auto(cls, kubeconfig: str | None = None) -> KubeClient:
        if kubeconfig or os.environ.get("KUBECONFIG") or not (SA_DIR / "token").exists():
            return cls.from_kubeconfig(kubeconfig)
        return cls.in_cluster()

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Obj:
        sess = await self._sess()
        data = json.dumps(body) if body is not None else None
        try:
            async with sess.request(
                method,
                self.server + path,
                data=data,
                ssl=self._ssl,
                params=params,
                headers={"Content-Type": content_type},
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    try:
                        status = json.loads(text)
                        reason, message = status.get("reason", ""), status.get("message", text)
                    except json.JSONDecodeError:
                        reason, message = resp.reason or "", text
                    raise _ERRORS.get(resp.status, ApiError)(resp.status, reason, message)
                return json.loads(text) if text else {}
        except aiohttp.ClientError as e:
            raise Unavailable(0, "Unavailable", str(e)) from None
        except TimeoutError:
            raise Unavailable(0, "Timeout", f"{method} {path} timed out") from None

    async def get(self, path: str) -> Obj:
        return await self.request("GET", path)

    async def list(self, path: str, label_selector: str = "") -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = (await self.request("GET", path, params=params)).get("items", [])
        return items

    async def create(self, path: str, body: Obj) -> Obj:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: Obj) -> Obj:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Obj) -> Obj:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> Obj:
        return await self.request("DELETE", path)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def crd_path(
    namespace: str, plural: str, name: str = "", group: str = "kubepd.io", version: str = "v1alpha1"
) -> str:
    base = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base
