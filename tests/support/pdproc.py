"""Run `kubepd serve` as a real process for tests: free loopback ports, wait for
/health, always reaped (SIGKILL on teardown if SIGTERM is not enough)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc

from pdcore.proto import pdpb_pb2, pdpb_pb2_grpc
from tests.support.ports import free_port


class PdProcess:
    def __init__(
        self,
        data_dir: Path,
        name: str = "pd-test",
        port: int | None = None,
        status_port: int | None = None,
        extra: list[str] | None = None,
        health_context: ssl.SSLContext | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        cwd: Path | None = None,
    ) -> None:
        """`health_context`: the server runs TLS (--cert...); /health is asked over https.
        `credentials`: what `channel()` dials gRPC with then. `cwd`: run the `pdcore`
        found there (another checkout, for before/after benchmarks)."""
        self.data_dir = data_dir
        self.name = name
        self.port = port or free_port()
        self.status_port = status_port or free_port()
        self.extra = extra or []
        self.health_context = health_context
        self.credentials = credentials
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def status(self) -> str:
        scheme = "https" if self.health_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.status_port}"

    def start(self, timeout: float = 60.0) -> PdProcess:
        """Wait for /health; generous, as CI machines are shared and restarts get slow."""
        url = f"http://{self.address}"
        cmd = [
            sys.executable,
            "-m",
            "pdcore.cli.main",
            "serve",
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--status-addr",
            f"127.0.0.1:{self.status_port}",
            *self.extra,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, start_new_session=True, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kubepd exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    self.status + "/health", timeout=1, context=self.health_context
                ) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"kubepd did not become healthy:\n{self.log_path.read_text()[-3000:]}")

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def channel(self) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.address, self.credentials)
        return grpc.insecure_channel(self.address)

    def stub(self) -> pdpb_pb2_grpc.PDStub:
        return pdpb_pb2_grpc.PDStub(self.channel())

    def cluster_id(self) -> int:
        resp = self.stub().GetMembers(pdpb_pb2.GetMembersRequest(), timeout=5)
        return int(resp.header.cluster_id)
