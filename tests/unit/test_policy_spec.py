"""One PolicySpec: the HTTP body and the SchedulingPolicy object map their spellings onto
it, so both refuse the same bad specs with the same message and agree on the defaults."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from pdcore.adapters.http.policy_api import spec_from_body
from pdcore.adapters.kube.scheduling_policies import spec_from_object
from pdcore.policy.spec import FailureStrategy, PolicyScope, PolicySpec, PolicySpecError

WASM = b"\0asm\1\0\0\0"
SHA = hashlib.sha256(WASM).hexdigest()


def http(**fields: Any) -> PolicySpec:
    body = {"name": "p", "module": base64.b64encode(WASM).decode(), **fields}
    return spec_from_body(body)


def cr(**fields: Any) -> PolicySpec:
    spec = {"cluster": "c", "module": {"inline": "ignored"}, **fields}
    return spec_from_object("p", spec, WASM)


# (HTTP body fields, SchedulingPolicy spec fields, the message both give)
BAD: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({"sha256": "0" * 64}, {"module": {"sha256": "0" * 64}}, f"sha256 is {SHA}, the spec says"),
    ({"sha256": "xyz"}, {"module": {"sha256": "xyz"}}, "sha256 must be 64 hex digits"),
    ({"limits": {"fuel": 10}}, {"limits": {"fuel": 10}}, "the fuel limit must be between"),
    ({"limits": {"memory_mib": 0}}, {"limits": {"memoryMiB": 0}}, "the memory limit in MiB"),
    ({"limits": {"memory_mib": "64"}}, {"limits": {"memoryMiB": "64"}}, "must be an integer"),
    ({"limits": {"max_proposals": True}}, {"limits": {"maxProposals": True}}, "an integer"),
    ({"limits": "lots"}, {"limits": "lots"}, "limits must be an object"),
    ({"interval_s": 0}, {"intervalSeconds": 0}, "the interval in seconds must be between"),
    ({"interval_s": "10"}, {"intervalSeconds": "10"}, "the interval in seconds must be a number"),
    (
        {"interval_s": 1, "limits": {"timeout_ms": 2000}},
        {"intervalSeconds": 1, "limits": {"timeoutMillis": 2000}},
        "the timeout must not exceed the interval",
    ),
    ({"priority": 101}, {"priority": 101}, "the priority must be between 0 and 100"),
    ({"failure_strategy": "Often"}, {"failureStrategy": "Often"}, "failure strategy must be one"),
    ({"config": [1]}, {"config": [1]}, "config must be an object"),
]


@pytest.mark.parametrize(("body", "obj", "message"), BAD)
def test_both_decoders_refuse_the_same_spec_with_the_same_message(
    body: dict[str, Any], obj: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicySpecError) as from_http:
        http(**body)
    with pytest.raises(PolicySpecError) as from_cr:
        cr(**obj)
    assert str(from_http.value) == str(from_cr.value)
    assert message in str(from_http.value)


def test_both_decoders_give_the_same_spec() -> None:
    assert http() == cr() == PolicySpec.parse({"name": "p", "module": WASM})
    spec = http(
        sha256=SHA.upper(),
        config={"batch": 2},
        interval_s=5,
        priority=70,
        failure_strategy="Retry",
        limits={"fuel": 5000, "memory_mib": 8, "timeout_ms": 100, "max_proposals": 3},
    )
    assert spec == cr(
        module={"sha256": SHA.upper()},
        config={"batch": 2},
        intervalSeconds=5,
        priority=70,
        failureStrategy="Retry",
        limits={"fuel": 5000, "memoryMiB": 8, "timeoutMillis": 100, "maxProposals": 3},
    )
    assert (spec.fuel, spec.memory_bytes, spec.timeout_ms, spec.max_proposals) == (
        5000,
        8 << 20,
        100,
        3,
    )
    assert spec.failure_strategy is FailureStrategy.RETRY and spec.scope is PolicyScope.CLUSTER
    assert spec.digest == SHA and dict(spec.config) == {"batch": 2}


def test_defaults_are_the_crds() -> None:
    spec = cr()
    assert (spec.interval_s, spec.priority, spec.failure_strategy) == (10.0, 50, "Disable")
    assert (spec.fuel, spec.memory_mib, spec.timeout_ms, spec.max_proposals) == (
        100_000_000,
        64,
        500,
        64,
    )
    assert cr(scope="store").scope is PolicyScope.STORE


def test_a_spec_is_frozen_and_its_config_a_copy() -> None:
    config = {"batch": 1}
    spec = http(config=config)
    config["batch"] = 9
    assert spec.config["batch"] == 1
    with pytest.raises(AttributeError):
        spec.priority = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.config["batch"] = 2  # type: ignore[index]


def test_the_http_body_needs_a_name_and_a_base64_module() -> None:
    with pytest.raises(PolicySpecError, match="needs a name"):
        spec_from_body({"module": base64.b64encode(WASM).decode()})
    with pytest.raises(PolicySpecError, match="base64 of a Wasm module"):
        spec_from_body({"name": "p", "module": "not base64!"})
    with pytest.raises(PolicySpecError, match="needs a Wasm module"):
        spec_from_body({"name": "p"})
    with pytest.raises(PolicySpecError, match="needs a Wasm module"):
        spec_from_object("p", {}, b"")
    with pytest.raises(PolicySpecError, match="unknown policy fields: colour"):
        PolicySpec.parse({"name": "p", "module": WASM, "colour": "red"})


def test_a_spec_built_directly_is_validated_the_same_way() -> None:
    with pytest.raises(PolicySpecError, match="the fuel limit must be between"):
        PolicySpec("p", WASM, "", fuel=10)
    with pytest.raises(PolicySpecError, match=f"sha256 is {SHA}, the spec says"):
        PolicySpec("p", WASM, "0" * 64)
    with pytest.raises(PolicySpecError, match="needs a name"):
        PolicySpec("", WASM, "")
    assert PolicySpec("p", WASM, "").digest == SHA == PolicySpec("p", WASM, SHA.upper()).digest
