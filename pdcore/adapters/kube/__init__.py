"""Kubernetes adapters: an async API client, KubeStore (the MetaStore port on custom
resources) and LeaseRole (roles held through coordination.k8s.io Leases)."""
