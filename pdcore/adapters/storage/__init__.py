"""Storage back-ends for the MetaStore and RegionStorage ports."""
