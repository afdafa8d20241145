"""The narrow read view the scheduling engine needs of a cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pdcore.domain.config import ClusterConfig
from pdcore.domain.region_tree import RegionTree
from pdcore.domain.store import Store


class ClusterView(Protocol):
    tree: RegionTree
    config: ClusterConfig

    def stores(self) -> list[Store]: ...

    def get_store(self, store_id: int) -> Store | None: ...


@dataclass
class MemoryCluster:
    """A plain in-memory ClusterView for tests and offline planning."""

    tree: RegionTree = field(default_factory=RegionTree)
    config: ClusterConfig = field(default_factory=ClusterConfig)
    store_map: dict[int, Store] = field(default_factory=dict)

    def stores(self) -> list[Store]:
        return list(self.store_map.values())

    def get_store(self, store_id: int) -> Store | None:
        return self.store_map.get(store_id)

    def add_stores(self, stores: Sequence[Store]) -> None:
        for s in stores:
            self.store_map[s.id] = s
