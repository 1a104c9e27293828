"""The OpenFeature provider against the real server, through OpenFeature's own client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from conftest import FlagsEnv
from millpond import AsyncMillpond, Millpond
from millpond.openfeature import MillpondProvider

STAFF = {
    "value": True,
    "conditions": [
        {
            "condition_type": "trait",
            "trait_entity": "user",
            "trait_key": "staff",
            "operator": "eq",
            "trait_value": "true",
        }
    ],
}


@pytest.fixture
def client(flags_env: FlagsEnv, base_url: str) -> Iterator[Millpond]:
    flags_env("POST", "/flags", 201, json={"key": "staff-only", "rules": [STAFF]})
    flags_env("POST", "/flags", 201, json={"key": "beta", "default_value": True})
    flags_env("POST", "/users", 201, json={"keys": {"id": "u1"}, "traits": {"staff": True}})
    with Millpond(api_key=flags_env.bound_key(), base_url=base_url, cache_providers=[]) as mp:
        api.set_provider(MillpondProvider(mp))
        yield mp
        api.clear_providers()


def test_boolean_flags_with_reasons(client: Millpond) -> None:
    of = api.get_client()
    staff = of.get_boolean_details("staff-only", False, EvaluationContext("u1"))
    assert staff.value is True and staff.reason == Reason.TARGETING_MATCH
    assert staff.variant == "on" and staff.flag_metadata["millpond_reason"] == "RULE_MATCH"
    other = of.get_boolean_details("staff-only", True, EvaluationContext("u2"))
    assert other.value is False and other.reason == Reason.DEFAULT and other.error_code is None
    by_attribute = of.get_boolean_value(
        "staff-only", False, EvaluationContext(attributes={"user": {"id": "u1"}})
    )
    assert by_attribute is True
    assert of.get_boolean_value("beta", False) is True


def test_errors_answer_the_callers_default(client: Millpond) -> None:
    of = api.get_client()
    missing = of.get_boolean_details("nope", True)
    assert missing.value is True and missing.error_code == ErrorCode.FLAG_NOT_FOUND
    text = of.get_string_details("beta", "x")
    assert text.value == "x" and text.error_code == ErrorCode.TYPE_MISMATCH
    assert of.get_integer_value("beta", 7) == 7
    assert of.get_object_value("beta", {"a": 1}) == {"a": 1}


def test_a_failing_server_answers_the_default(base_url: str) -> None:
    with Millpond(api_key="mp_" + "x" * 40, base_url=base_url, environment="e") as mp:
        api.set_provider(MillpondProvider(mp))
        try:
            details = api.get_client().get_boolean_details("beta", True)
            assert details.value is True and details.error_code == ErrorCode.GENERAL
        finally:
            api.clear_providers()


def test_async_resolution(flags_env: FlagsEnv, base_url: str, client: Millpond) -> None:
    key = flags_env.bound_key()

    async def main() -> None:
        async with AsyncMillpond(api_key=key, base_url=base_url) as amp:
            api.set_provider(MillpondProvider(client, amp))
            details = await api.get_client().get_boolean_details_async(
                "staff-only", False, EvaluationContext("u1")
            )
            assert details.value is True and details.reason == Reason.TARGETING_MATCH

    asyncio.run(main())


def test_track_sends_an_event(flags_env: FlagsEnv, client: Millpond) -> None:
    api.get_client().track("opened", EvaluationContext("u1"))
    assert client.flush(timeout=10)
    user = flags_env("POST", "/users/lookup", json={"keys": {"id": "u1"}})
    metrics = flags_env("GET", f"/users/{user['id']}/metrics")
    assert any(m["event"] == "opened" and m["value"] == 1 for m in metrics)


def test_without_the_openfeature_sdk_the_error_says_what_to_install() -> None:
    code = "import sys; sys.modules['openfeature'] = None; import millpond.openfeature"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and 'pip install "millpond[openfeature]"' in done.stderr
