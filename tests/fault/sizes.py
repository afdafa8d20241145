"""The fault suite's sizes: small by default (CI), large under `make soak`."""

from __future__ import annotations

import os

CYCLES = int(os.environ.get("KUBEPD_FAULT_CYCLES", "20"))  # kill -9 restarts
FUZZ_ROUNDS = int(os.environ.get("KUBEPD_FUZZ_ROUNDS", "12"))  # bad messages per RPC
SEED = int(os.environ.get("KUBEPD_FAULT_SEED", "1403"))
