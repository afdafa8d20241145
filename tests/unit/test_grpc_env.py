"""The `kubepd` command's grpc settings: a default, never over the operator's own."""

from __future__ import annotations

import os
import subprocess
import sys

from pdcore.cli import grpc_env


def test_the_listener_experiment_is_off_unless_the_environment_says_otherwise() -> None:
    env: dict[str, str] = {}
    grpc_env.apply(env)
    assert env == {"GRPC_EXPERIMENTS": "-event_engine_listener"}
    for own in ("", "event_engine_listener"):
        env = {"GRPC_EXPERIMENTS": own}
        grpc_env.apply(env)
        assert env == {"GRPC_EXPERIMENTS": own}


def test_the_command_sets_it_before_grpc_is_imported() -> None:
    code = (
        "import os, sys; import pdcore.cli.main; "
        "print(os.environ['GRPC_EXPERIMENTS'], 'grpc' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == ["-event_engine_listener", "False"]
