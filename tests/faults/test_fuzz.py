"""Fuzzing the gateway's and an engine's OpenAPI schemas with schemathesis (valid and invalid
requests generated from the schema): never a 5xx, and every 4xx in OpenAI's error envelope."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from llamafleet.security.engine_auth import engine_headers
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.process_cluster import engine_endpoint

pytestmark = pytest.mark.integration

# A 64-token context keeps every generated completion short, whatever max_tokens the fuzzer picks,
# and requests that set no limit (most generated ones) stop after 8 tokens: what is fuzzed is the
# schema and the answer's shape, not how long generation runs.
MODELS = """
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    contextLength: 64
    parallelSlots: 2
    embeddings: true
    requestDefaults:
      maxTokens: 8
"""
MODEL = "smollm2-135m"
EXAMPLES = 12  # per operation and generation mode


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("fuzz"), MODELS, ["smollm2-135m"])
    yield cluster
    stop_cluster(cluster)


def judge(response: Any) -> str:
    """What is wrong with an answer ('' when nothing)."""
    request = f"{response.request.method} {response.request.url}"
    if response.status_code >= 500:
        return f"{response.status_code} for {request}: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            assert error["message"]
            assert error["type"]
        except (ValueError, KeyError, TypeError, AssertionError):
            return f"{response.status_code} not in OpenAI's envelope for {request}: {response.text[:300]}"
    return ""


def fuzz(url: str, headers: dict[str, str]) -> tuple[collections.Counter[int], list[str]]:
    """Every operation of ``url``'s schema, with valid and invalid requests: (statuses, problems)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers)
    problems: list[str] = []
    statuses: collections.Counter[int] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: Any) -> None:
                valid = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
                if valid:  # valid requests name the served model, so they reach it
                    if "model" in (case.path_parameters or {}):
                        case.path_parameters["model"] = MODEL
                    if isinstance(case.body, dict) and "model" in case.body:
                        case.body["model"] = MODEL
                # Generous: on a busy machine (parallel tests) a long rerank or embedding list takes a
                # while; a request that hangs still fails here.
                response = case.call(base_url=url, timeout=300, headers=headers)
                statuses[response.status_code] += 1
                problem = judge(response)
                if problem and len(problems) < 20:
                    problems.append(problem)

            with contextlib.suppress(Unsatisfiable):  # no invalid request exists (e.g. GET /healthz)
                send()
    return statuses, problems


@pytest.mark.parametrize("target", ["gateway", "engine"])
def test_no_generated_request_gets_a_5xx_and_every_4xx_is_openai_shaped(fuzzed: Cluster, target: str) -> None:
    if target == "gateway":
        url, headers = fuzzed.base_url, {}
    else:
        engine = engine_endpoint(fuzzed.grpc, fuzzed.tmp)
        url, headers = engine.url, engine_headers(engine.secret)
    statuses, problems = fuzz(url, headers)
    assert problems == [], (statuses, problems)
    assert statuses[200] > 10  # valid requests were served
    assert sum(n for status, n in statuses.items() if 400 <= status < 500) > 10, (
        statuses
    )  # and bad ones refused
