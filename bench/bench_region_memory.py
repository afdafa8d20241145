"""Memory per region in the PD node's region tree at 100k and 1M regions, built the way
heartbeats build them (protobuf → Region → RegionTree). Measured as the RSS growth of
a fresh process per size, so allocator overhead is included."""

from __future__ import annotations

import gc
import subprocess
import sys

from _common import progress

CHILD = r"""
import gc, sys
sys.path.insert(0, ".")
from bench._common import rss_bytes
import os
from pdcore.adapters import codec
from pdcore.domain.region_tree import RegionTree
from pdcore.proto import metapb_pb2, pdpb_pb2
n = int(sys.argv[1])
tree = RegionTree()
gc.collect()
before = rss_bytes(os.getpid())
for i in range(n):
    rid = 1000 + i
    peers = [metapb_pb2.Peer(id=rid * 10 + j, store_id=1 + (i + j) % 5) for j in range(3)]
    req = pdpb_pb2.RegionHeartbeatRequest(
        region=metapb_pb2.Region(id=rid, start_key=b"" if i == 0 else b"t%08d_r" % i,
                                 end_key=b"t%08d_r" % (i + 1), peers=peers,
                                 region_epoch=metapb_pb2.RegionEpoch(conf_ver=3, version=i + 2)),
        leader=peers[0], approximate_size=96 << 20, approximate_keys=960000)
    tree.put(codec.region_from_heartbeat(req))
gc.collect()
print((rss_bytes(os.getpid()) - before) / n)
"""


def main() -> int:
    print(f"{'regions':>10} {'bytes/region':>14}")
    for n in (100_000, 1_000_000):
        progress(f"building {n} regions")
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n)],
            capture_output=True,
            text=True,
            check=True,
            cwd=__file__.rsplit("/bench/", 1)[0],
        )
        print(f"{n:>10} {float(out.stdout.strip()):>14.0f}")
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
