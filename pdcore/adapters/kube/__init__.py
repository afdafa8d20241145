"""Kubernetes adapters: an async API client (`client`, `config`, `errors`), KubeStore
(the MetaStore port on custom resources, `store`), live watches (`watching`), the
translation between custom resources and domain values (`convert`), and the roles held
through coordination.k8s.io Leases (`lease`, `roles`)."""
