"""Schedulers: each looks at the whole cluster and proposes operators with reasons.
`registry.SCHEDULERS` is the explicit table of what can be created by name."""
