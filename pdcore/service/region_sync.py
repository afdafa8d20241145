"""One apply for regions arriving over the pd-leader's region sync, for every host that
keeps a synced view (a follower sidecar, the scheduler host).

The sync carries each region's meta, leader, down and pending peers and traffic (kept:
the scheduler host's hot statistics come from it; the codec gives it TiKV's 60 s
heartbeat interval, which the sync does not carry), but not its approximate size and
keys (those come from `GetRegionSizes` now and then): a synced copy without them keeps
the sizes of the copy it replaces, so a sidecar that takes over as pd-leader does not
schedule on size-0 regions. Every synced region was heard live by the pd-leader, so it
counts towards the prepared gate.
"""

from __future__ import annotations

from pdcore.domain.errors import PdError
from pdcore.domain.region import Region
from pdcore.domain.region_tree import RegionTree
from pdcore.service.scheduling import SchedulingService


def apply_synced(
    tree: RegionTree, region: Region, scheduling: SchedulingService | None = None
) -> tuple[Region, Region | None] | None:
    """Put a synced region into `tree`; (the region as kept, the copy it replaced), or
    None when it is older than ours."""
    origin = tree.get(region.id)
    if origin is not None and not region.approximate_size and not region.approximate_keys:
        region = region.with_(
            approximate_size=origin.approximate_size, approximate_keys=origin.approximate_keys
        )
    try:
        tree.put(region)
    except PdError:
        return None  # an older copy than ours
    if scheduling is not None:
        scheduling.heard(region.id)
    return region, origin
