"""Addresses and member identity shared by the server compositions."""

from __future__ import annotations

import hashlib
from urllib.parse import urlparse

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else "http://" + url)
    if not parsed.hostname or parsed.port is None:
        raise ValueError(f"address {url!r} must look like http://HOST:PORT")
    return parsed.hostname, parsed.port


def member_id_of(name: str, url: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}|{url}".encode()).digest()[:8], "big") >> 1
