"""No request shape hangs a replica: a real engine with two slots, inputs that once stalled it and
their siblings. Each must answer within a bound; unsupported parameters get a 400 naming them."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import oneshot
from tests.support.engine import EngineProcess, running_engine

pytestmark = pytest.mark.integration

MAX_BODY = 64 << 10
BOUND_S = 30  # each answer well within this; before the fix the first case never answered


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[EngineProcess]:
    flags = ("--embeddings", "--parallel-slots", "2", "--n-threads", "1", "--context-length", "256",
             "--max-body-bytes", str(MAX_BODY))  # fmt: skip
    with running_engine(smollm2_path, tmp_path_factory.mktemp("shapes"), *flags) as process:
        yield process


def post(engine: EngineProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return oneshot.post(f"{engine.url}{path}", json={"model": "smollm2", **body}, timeout=BOUND_S)


@pytest.mark.parametrize(
    "inputs",
    [
        ["same text"] * 3,  # more identical inputs than slots: every slot finished in one step
        ["x"] * 5,
        ["a b c", "d e", "f"],
        ["word " * 254] * 3,  # at the context limit, more than slots
    ],
    ids=["identical-3", "identical-5", "different", "at-limit"],
)
def test_embedding_batches_always_answer(engine: EngineProcess, inputs: list[str]) -> None:
    response = post(engine, "/v1/embeddings", {"input": inputs})
    assert response.status_code == 200, response.text
    assert [d["index"] for d in response.json()["data"]] == list(range(len(inputs)))


def test_identical_completions_beyond_the_slots_all_answer(engine: EngineProcess) -> None:
    body = {"prompt": "Hi", "max_tokens": 8, "temperature": 0}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post(engine, "/v1/completions", body), range(6)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["choices"][0]["text"] for r in responses}) == 1  # greedy: the same text


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"input": "word " * 300}, None),  # longer than the context
        ("/v1/completions", {"prompt": "word " * 300, "max_tokens": 4}, None),
        ("/v1/embeddings", {"input": ["", "a"]}, "input"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}},
            "response_format",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "functions": [{"name": "f"}],
            },
            "functions",
        ),
    ],
    ids=["embed-too-long", "prompt-too-long", "empty-input", "response-format", "functions"],
)
def test_bad_requests_get_a_400_in_openais_envelope(
    engine: EngineProcess, path: str, body: dict[str, Any], param: str | None
) -> None:
    response = post(engine, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if param:
        assert error["param"] == param
    assert (
        post(engine, "/v1/completions", {"prompt": "Hi", "max_tokens": 2}).status_code == 200
    )  # still serving


def test_an_oversize_body_gets_413_whether_its_length_is_declared_or_not(engine: EngineProcess) -> None:
    body = json.dumps({"model": "smollm2", "prompt": "x" * MAX_BODY, "max_tokens": 1}).encode()
    declared = oneshot.post(f"{engine.url}/v1/completions", content=body, timeout=BOUND_S,
                          headers={"content-type": "application/json"})  # fmt: skip

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    streamed = oneshot.post(f"{engine.url}/v1/completions", content=chunks(), timeout=BOUND_S,
                          headers={"content-type": "application/json"})  # fmt: skip
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
    assert post(engine, "/v1/completions", {"prompt": "Hi", "max_tokens": 2}).status_code == 200
