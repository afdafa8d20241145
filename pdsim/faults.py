"""Faults the fleet can suffer, asked of a `Faults` object at each message.

`NoFaults` is the default. `pdsim.swarm.FaultSchedule` draws windows of trouble from a
seed: dropped heartbeats and commands, refused leader transfers, delayed messages (in
the in-process transport), stores down and slow, PD restarts. The fleet asks; it never
decides faults itself, so a run with the same seed suffers the same faults.
"""

from __future__ import annotations

from typing import Protocol


class Faults(Protocol):
    def drop_heartbeat(self, region_id: int) -> bool:
        """Lose this region heartbeat before it is sent."""
        ...

    def drop_command(self, region_id: int) -> bool:
        """Lose this command PD sent before the store acts on it."""
        ...

    def refuse_transfer(self, region_id: int) -> bool:
        """Raft refuses this leader transfer (the target lags, the leader is busy)."""
        ...

    def delay_s(self, method: str, direction: str) -> float:
        """Extra latency of one message of `method` ("request" or "response")."""
        ...


class NoFaults:
    def drop_heartbeat(self, region_id: int) -> bool:
        return False

    def drop_command(self, region_id: int) -> bool:
        return False

    def refuse_transfer(self, region_id: int) -> bool:
        return False

    def delay_s(self, method: str, direction: str) -> float:
        return 0.0
