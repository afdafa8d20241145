"""Loopback ports for servers the tests start."""

from __future__ import annotations

import random
import socket

# Below the kernel's ephemeral range (32768+ here), so an outgoing connection made
# between picking a port and the server binding it cannot take it first.
_LOW, _HIGH = 20000, 32000
_given: set[int] = set()


def free_port() -> int:
    """A port nobody listens on that this process has not handed out before."""
    for _ in range(1000):
        port = random.randint(_LOW, _HIGH)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH}")
