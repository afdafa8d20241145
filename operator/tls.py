"""The operator's side of a cluster's mutual TLS: the scheduler role it holds for a
TiKVCluster with spec.tls dials that cluster's sidecars, and serves their proposals,
with the operator's own certificate (from the same CA), found in $KUBEPD_TLS_DIR (the
chart mounts its Secret there)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pd_operator.resources import TLS_FILES, Obj, tls_of

from pdcore.adapters.tls import Security

TLS_DIR_ENV = "KUBEPD_TLS_DIR"


def operator_security(body: Obj, env: Mapping[str, str] = os.environ) -> Security:
    """How the operator talks to this cluster's sidecars; ValueError says why it cannot."""
    tls = tls_of(body)
    if tls is None:
        return Security()
    directory = env.get(TLS_DIR_ENV, "")
    if not directory:
        raise ValueError(
            f"spec.tls asks for mutual TLS but the operator has no certificate: set "
            f"{TLS_DIR_ENV} to a directory with ca.crt, tls.crt and tls.key "
            "(the chart's tls.enabled does)"
        )
    path = {flag: os.path.join(directory, name) for flag, name in TLS_FILES.items()}
    sec = Security(path["cacert"], path["cert"], path["key"], tuple(tls.get("certAllowedCN", ())))
    sec.check()
    return sec
