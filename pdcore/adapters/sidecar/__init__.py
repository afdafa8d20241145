"""Sidecar mode: every TiKV pod's PD, one of which holds the pd-leader Lease."""
