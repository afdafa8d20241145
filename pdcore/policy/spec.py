"""PolicySpec: what a Wasm scheduling policy is asked to be, validated once.

Both ways of adding a policy (`kubepd policy add` over HTTP, a SchedulingPolicy custom
resource) spell the keys their own way; each only maps its spelling onto the canonical
field names here (`SPEC_FIELDS`) and calls `PolicySpec.parse`, so the defaults, bounds
and messages are the same whichever way a policy arrives. The bounds are those of the
SchedulingPolicy CRD (deploy/crds/schedulingpolicies.yaml).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

E = TypeVar("E", bound=StrEnum)


class PolicySpecError(ValueError):
    """The spec is refused; the message says which field and why."""


class FailureStrategy(StrEnum):
    DISABLE = "Disable"  # stop running it
    IGNORE = "Ignore"  # run it again on the next interval
    RETRY = "Retry"  # run it again with exponential backoff


class PolicyScope(StrEnum):
    CLUSTER = "cluster"  # runs where the scheduler role is
    STORE = "store"  # runs in every sidecar over the regions its stores lead


# canonical name -> (default, minimum, maximum, what it is)
_NUMBERS: dict[str, tuple[int | float, int | float, int | float, str]] = {
    "interval_s": (10.0, 1, 3600, "the interval in seconds"),
    "priority": (50, 0, 100, "the priority"),
    "fuel": (100_000_000, 1000, 100_000_000_000, "the fuel limit"),
    "memory_mib": (64, 1, 1024, "the memory limit in MiB"),
    "timeout_ms": (500, 1, 60_000, "the timeout in milliseconds"),
    "max_proposals": (64, 0, 10_000, "the proposal limit"),
}
SPEC_FIELDS = (
    "name",
    "module",
    "sha256",
    "config",
    "scope",
    "failure_strategy",
    *_NUMBERS,
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """Valid by construction: `__post_init__` is the one validator (so a spec built
    directly is checked too); `parse` decodes loosely typed fields onto it."""

    name: str
    module: bytes = field(repr=False)
    digest: str  # sha256 hex the module must have; "" takes the module's
    config: Mapping[str, Any] = field(default_factory=dict)
    scope: PolicyScope = PolicyScope.CLUSTER
    failure_strategy: FailureStrategy = FailureStrategy.DISABLE
    interval_s: float = 10.0
    priority: int = 50
    fuel: int = 100_000_000
    memory_mib: int = 64
    timeout_ms: int = 500
    max_proposals: int = 64

    def __post_init__(self) -> None:
        if not self.name:
            raise PolicySpecError("the policy needs a name")
        if not self.module:
            raise PolicySpecError("the policy needs a Wasm module")
        actual = hashlib.sha256(self.module).hexdigest()
        want = self.digest.lower()
        if want and not _SHA256.fullmatch(want):
            raise PolicySpecError("sha256 must be 64 hex digits")
        if want and want != actual:
            raise PolicySpecError(f"the module's sha256 is {actual}, the spec says {self.digest}")
        object.__setattr__(self, "digest", actual)
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        for key, (_, low, high, what) in _NUMBERS.items():
            value = getattr(self, key)
            if not low <= value <= high:
                raise PolicySpecError(f"{what} must be between {low:n} and {high:n}, got {value!r}")
        if self.timeout_ms > self.interval_s * 1000:
            raise PolicySpecError(
                "the timeout must not exceed the interval: a run has to finish before the next"
            )

    @classmethod
    def parse(cls, fields: Mapping[str, object]) -> PolicySpec:
        """`fields` by canonical name (absent: the default), as a decoder maps them;
        PolicySpecError names the first field that is wrong."""
        unknown = sorted(set(fields) - set(SPEC_FIELDS))
        if unknown:
            raise PolicySpecError(f"unknown policy fields: {', '.join(unknown)}")
        name, module, want = fields.get("name"), fields.get("module"), fields.get("sha256")
        if not isinstance(name, str):
            raise PolicySpecError("the policy needs a name")
        if not isinstance(module, bytes):
            raise PolicySpecError("the policy needs a Wasm module")
        if want is not None and not isinstance(want, str):
            raise PolicySpecError("sha256 must be 64 hex digits")
        config = fields.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise PolicySpecError("config must be an object")
        numbers = {key: _number(key, fields.get(key)) for key in _NUMBERS}
        return cls(
            name=name,
            module=module,
            digest=want or "",
            config=config or {},
            scope=_choice(PolicyScope, "scope", fields.get("scope")),
            failure_strategy=_choice(
                FailureStrategy, "failure strategy", fields.get("failure_strategy")
            ),
            interval_s=float(numbers["interval_s"]),
            priority=int(numbers["priority"]),
            fuel=int(numbers["fuel"]),
            memory_mib=int(numbers["memory_mib"]),
            timeout_ms=int(numbers["timeout_ms"]),
            max_proposals=int(numbers["max_proposals"]),
        )

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib << 20


def _number(key: str, value: object) -> int | float:
    """The field's value if it has the right type (its default if absent)."""
    default, _, _, what = _NUMBERS[key]
    if value is None:
        return default
    integral = key != "interval_s"
    # bool is an int to Python, never a number to a user
    ok = isinstance(value, int) or (not integral and isinstance(value, float))
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integral else "a number"
        raise PolicySpecError(f"{what} must be {kind}, got {value!r}")
    assert isinstance(value, int | float)
    return value


def _choice(enum: type[E], what: str, value: object) -> E:
    if value is None:
        return next(iter(enum))
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise PolicySpecError(f"{what} must be one of {allowed}, got {value!r}") from None


def map_keys(raw: Mapping[str, Any], spelling: Mapping[str, str]) -> dict[str, object]:
    """`raw` with its keys (dotted paths into nested objects, e.g. "limits.fuel")
    renamed by `spelling` onto the canonical fields; absent keys stay absent."""
    out: dict[str, object] = {}
    for path, canonical in spelling.items():
        node: Any = raw
        parts = path.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping):
                raise PolicySpecError(f"{'.'.join(parts[:i])} must be an object")
            if part not in node:
                break
            node = node[part]
        else:
            out[canonical] = node
    return out
