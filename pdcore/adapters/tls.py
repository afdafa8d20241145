"""TLS and mutual TLS for the gRPC and HTTP servers, configured as PD's are: a CA
(`cacert-path`; with it, clients must present a certificate it signed), the server's
certificate and key, and optionally the common names a client certificate may carry
(`cert-allowed-cn`). Files are re-read when they change, without a restart: gRPC asks
for new credentials at each new handshake, HTTP's context is reloaded by `watch`."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import grpc

log = logging.getLogger("kubepd.tls")
RELOAD_CHECK_S = 2.0


@dataclass(frozen=True, slots=True)
class Security:
    cacert_path: str = ""
    cert_path: str = ""
    key_path: str = ""
    cert_allowed_cn: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.cert_path)

    def check(self) -> None:
        """ValueError naming what is missing or unreadable."""
        if bool(self.cert_path) != bool(self.key_path):
            raise ValueError("a certificate and its key go together: set both --cert and --key")
        if (self.cacert_path or self.cert_allowed_cn) and not self.enabled:
            raise ValueError("--cacert and cert-allowed-cn need --cert and --key (TLS) too")
        for path in (self.cacert_path, self.cert_path, self.key_path):
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"cannot read {path}")


class CertFiles:
    """The three files and whether any changed since they were last read."""

    def __init__(self, sec: Security) -> None:
        self.sec = sec
        self._seen: tuple[tuple[int, int], ...] = ()

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self.sec.cacert_path, self.sec.cert_path, self.sec.key_path):
            st = os.stat(path) if path else None
            out.append((st.st_mtime_ns, st.st_size) if st else (0, 0))
        return tuple(out)

    def changed(self) -> bool:
        try:
            return self._stamp() != self._seen
        except OSError:
            return False  # mid-rotation: keep what we have

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        stamp = self._stamp()
        with open(self.sec.key_path, "rb") as k, open(self.sec.cert_path, "rb") as c:
            key, cert = k.read(), c.read()
        ca = None
        if self.sec.cacert_path:
            with open(self.sec.cacert_path, "rb") as f:
                ca = f.read()
        self._seen = stamp
        return key, cert, ca


def grpc_credentials(sec: Security) -> grpc.ServerCredentials:
    files = CertFiles(sec)
    key, cert, ca = files.read()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        if not files.changed():
            return None
        try:
            key, cert, ca = files.read()
        except OSError as e:
            log.warning("certificate files changed but cannot be read: %s", e)
            return None
        log.info("gRPC certificates reloaded")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    first = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    return grpc.dynamic_ssl_server_credentials(
        first,
        fetch,  # type: ignore[arg-type]  # None means "keep the current certificates"
        require_client_authentication=ca is not None,
    )


class HttpTls:
    """An SSL context for the HTTP server that follows the files."""

    def __init__(self, sec: Security) -> None:
        self.files = CertFiles(sec)
        self.context = self._build()

    def _build(self) -> ssl.SSLContext:
        _, _, ca = self.files.read()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.files.sec.cert_path, self.files.sec.key_path)
        if ca is not None:
            ctx.load_verify_locations(cadata=ca.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def reload(self) -> None:
        """New handshakes use the new files (aiohttp keeps this context object)."""
        fresh = self._build()
        sec = self.files.sec
        self.context.load_cert_chain(sec.cert_path, sec.key_path)
        if sec.cacert_path:
            self.context.load_verify_locations(cafile=sec.cacert_path)
        del fresh  # built first so a bad file fails before the live context is touched

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_CHECK_S)
            if self.files.changed():
                try:
                    self.reload()
                    log.info("HTTP certificates reloaded")
                except (OSError, ssl.SSLError) as e:
                    log.warning("certificate files changed but cannot be used: %s", e)


def peer_common_names(peercert: dict[str, object] | None) -> set[str]:
    """The commonName values of a certificate as `ssl` reports it."""
    names: set[str] = set()
    for rdn in (peercert or {}).get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    return names


def add_grpc_port(server: grpc.aio.Server, address: str, sec: Security) -> int:
    """Listen on `address`, over TLS when configured; the bound port (0: could not)."""
    try:
        if sec.enabled:
            return server.add_secure_port(address, grpc_credentials(sec))
        return server.add_insecure_port(address)
    except RuntimeError:  # grpc raises when the port is taken
        return 0


def dialer(sec: Security) -> Callable[[str], grpc.aio.Channel]:
    """How this member opens channels to other members: with TLS, presenting its own
    certificate (re-read for every new channel, so rotation needs no restart)."""
    if not sec.enabled:
        return grpc.aio.insecure_channel
    files = CertFiles(sec)

    def dial(address: str) -> grpc.aio.Channel:
        key, cert, ca = files.read()
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert))

    return dial
