"""kill -9 a `kubepd serve` at random moments under TSO and AllocID load, restart it on
the same data directory, and count what must never happen: a timestamp not above every
one handed out before, or an id handed out twice. KUBEPD_FAULT_CYCLES sets the number
of kills (20 here, 1,000 under `make soak`)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pdcore.domain.tso import LOGICAL_BITS
from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.fault.sizes import CYCLES, SEED
from tests.support.pdproc import PdProcess


@dataclass
class Tally:
    highest_ts: int = 0
    timestamps: int = 0
    regressions: int = 0
    ids: set[int] = field(default_factory=set)
    duplicates: int = 0
    failed_calls: int = 0


def load(
    address: str, cluster_id: int, tally: Tally, stop: threading.Event, rng: random.Random
) -> None:
    """One client, one call at a time: every answer it gets is recorded."""
    header = pdpb_pb2.RequestHeader(cluster_id=cluster_id)
    with grpc.insecure_channel(address) as ch:
        stub = pdpb_pb2_grpc.PDStub(ch)
        while not stop.is_set():
            try:
                if rng.random() < 0.6:
                    count = rng.randint(1, 64)
                    resp = next(
                        stub.Tso(iter([pdpb_pb2.TsoRequest(header=header, count=count)]), timeout=2)
                    )
                    ts = (resp.timestamp.physical << LOGICAL_BITS) | resp.timestamp.logical
                    # The answer is the largest of `count`: all of them must be new.
                    if ts - count + 1 <= tally.highest_ts:
                        tally.regressions += 1
                    tally.highest_ts = max(tally.highest_ts, ts)
                    tally.timestamps += count
                else:
                    count = rng.randint(1, 50)
                    resp = stub.AllocID(
                        pdpb_pb2.AllocIDRequest(header=header, count=count), timeout=2
                    )
                    assert not resp.header.HasField("error"), resp.header.error
                    got = set(range(resp.id - resp.count + 1, resp.id + 1))
                    tally.duplicates += len(got & tally.ids)
                    tally.ids |= got
            except grpc.RpcError:
                tally.failed_calls += 1  # the server is being killed: expected
                time.sleep(0.01)


def test_kill9_loop_never_regresses_tso_or_reuses_ids(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    pd = PdProcess(data, name="pd").start()
    tally = Tally()
    try:
        cluster_id = pd.cluster_id()
        for _ in range(CYCLES):
            stop = threading.Event()
            worker = threading.Thread(target=load, args=(pd.address, cluster_id, tally, stop, rng))
            worker.start()
            time.sleep(rng.uniform(0.05, 0.4))  # kill at a random moment of the load
            pd.kill9()
            stop.set()
            worker.join(10)
            assert not worker.is_alive()
            pd = PdProcess(data, name="pd", port=pd.port, status_port=pd.status_port).start()
            assert pd.cluster_id() == cluster_id
    finally:
        pd.stop()
    print(
        f"kill-9 loop: {CYCLES} kills, {tally.timestamps} timestamps, {len(tally.ids)} ids, "
        f"{tally.regressions} TSO regressions, {tally.duplicates} duplicate ids, "
        f"{tally.failed_calls} failed calls"
    )
    assert tally.timestamps > 0 and tally.ids, "the load never got an answer"
    assert tally.regressions == 0
    assert tally.duplicates == 0
