"""The kopf operator for kubepd, imported as `pd_operator`.

It turns `TiKVCluster` resources into StatefulSets and drives store lifecycle, and
hosts the scheduler role (ARCHITECTURE.md §2).
"""
