"""Corrupt GGUFs in the models file: a clear error on that model and in the logs; the rest keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import oneshot
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def mixed_cluster(tmp_path: Path, smollm2_path: Path) -> Iterator[Cluster]:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_path.read_bytes()[: 5 * 1024 * 1024])
    wrong_magic = tmp_path / "wrong-magic.gguf"
    wrong_magic.write_bytes(b"GGML" + smollm2_path.read_bytes()[4 : 1024 * 1024])
    models = f"""
models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
  - name: truncated
    source: {truncated}
  - name: wrong-magic
    source: {wrong_magic}
  - name: missing
    source: {tmp_path / "nowhere.gguf"}
"""
    running = start_cluster(tmp_path, models, ["smollm2-135m"])
    yield running
    stop_cluster(running)


def condition(model: dict[str, object], kind: str) -> dict[str, str]:
    return next(c for c in model["conditions"] if c["type"] == kind)  # type: ignore[attr-defined,index]


def test_corrupt_models_fail_clearly_and_others_keep_serving(mixed_cluster: Cluster) -> None:
    def all_reported() -> bool:
        models = {m["name"]: m for m in mixed_cluster.models_json()}
        return all(
            condition(models[n], "ModelValid")["status"] == "False"
            for n in ("truncated", "wrong-magic", "missing")
        )

    wait_until(all_reported, 60, "the broken models to be reported")
    models = {m["name"]: m for m in mixed_cluster.models_json()}

    truncated = condition(models["truncated"], "ModelValid")
    assert truncated["reason"] == "ModelInvalid"
    assert "truncated" in truncated["message"]
    assert "re-download" in truncated["message"]

    magic = condition(models["wrong-magic"], "ModelValid")
    assert magic["reason"] == "ModelInvalid"
    assert "not a GGUF file" in magic["message"]

    missing = condition(models["missing"], "ModelValid")
    assert missing["reason"] == "ModelNotFound"
    assert "does not exist" in missing["message"]

    assert condition(models["smollm2-135m"], "Ready")["status"] == "True"
    assert condition(models["truncated"], "Ready")["reason"] == "ReplicaFailed"

    log = mixed_cluster.log()
    assert "truncated.gguf: truncated" in log or "truncated.gguf: corrupt" in log
    assert "not a GGUF file" in log

    url = f"{mixed_cluster.base_url}/v1/chat/completions"
    ok = oneshot.post(
        url,
        json={"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert ok.status_code == 200
    broken = oneshot.post(
        url, json={"model": "truncated", "messages": [{"role": "user", "content": "hi"}]}, timeout=30
    )
    assert broken.status_code == 503
    assert "Retry-After" in broken.headers
