"""grpc settings the `kubepd` command makes before grpc is imported.

grpc reads `GRPC_EXPERIMENTS` once, when its core starts. kubepd turns off one experiment
by default: `event_engine_listener`. With it on (grpc's default), a connection a server
accepts is read by grpc's event-engine threads, which hand every message to the thread
polling the completion queue, which wakes the asyncio loop: one more thread hop per
message than with the listener it replaces, where the polling thread reads the socket
itself. Under PD's TSO load generator that hop is most of a round trip's latency
(docs/benchmarks.md: about 12 % more timestamps/s and 15 % lower p50 without it).

A `GRPC_EXPERIMENTS` already in the environment is left as it is (set it to an empty
string for grpc's defaults).
"""

from __future__ import annotations

from collections.abc import MutableMapping

GRPC_EXPERIMENTS = "-event_engine_listener"


def apply(environ: MutableMapping[str, str]) -> None:
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
