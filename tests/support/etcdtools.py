"""etcd's own tools against kubepd: the Go client scenario program (etcdclient/) and
etcdctl, both built from the Go module proxy and cached (tests/conformance/gobuild.py)."""

from __future__ import annotations

import json
import subprocess

from tests.conformance.gobuild import build_etcdclient, build_etcdctl


def etcdclient(address: str, name: str, *args: str) -> dict[str, object]:
    """Run one scenario of the Go client program; its JSON result."""
    res = subprocess.run(
        [str(build_etcdclient()), "-endpoint", address, "-scenario", name, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, f"etcdclient {name} via {address}: {res.stderr[-3000:]}"
    return json.loads(res.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def etcdctl(
    address: str, *args: str, stdin: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run etcdctl; with `ok`, assert it succeeded."""
    res = subprocess.run(
        [str(build_etcdctl()), f"--endpoints={address}", "--command-timeout=15s", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )
    if ok:
        assert res.returncode == 0, f"etcdctl {args} via {address}: {res.stderr[-2000:]}"
    return res
