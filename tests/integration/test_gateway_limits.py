"""The gateway refuses what it must not pass on: oversize bodies (413) and parameters the engines do
not honour (400 naming them), in OpenAI's envelope, before any engine is involved."""

from __future__ import annotations

import json
import socket

import pytest

from llamafleet.http.body_limit import DEFAULT_MAX_BODY_BYTES
from tests.support import oneshot
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration


def test_an_oversize_body_is_refused_with_413(shared_cluster: Cluster) -> None:
    body = b'{"model": "smollm2-135m", "prompt": "' + b"x" * DEFAULT_MAX_BODY_BYTES + b'"}'
    response = oneshot.post(f"{shared_cluster.base_url}/v1/completions", content=body, timeout=60,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unsupported_parameters_are_refused_by_name(shared_cluster: Cluster) -> None:
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "best_of": 3}
    response = oneshot.post(f"{shared_cluster.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "best_of"


def test_oversize_headers_are_refused_with_431_and_the_gateway_goes_on(shared_cluster: Cluster) -> None:
    """uvicorn's httptools parser keeps any amount of header bytes: bounded at 64 KiB here."""
    host, port = shared_cluster.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    fine = oneshot.get(f"{shared_cluster.base_url}/v1/models", headers={"x-big": "a" * 8000}, timeout=30)
    assert fine.status_code == 200
