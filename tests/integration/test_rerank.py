"""/v1/rerank on a real engine: the pair laid out as llama-server lays it out, scored by llama.cpp's
rank pooling, the answer in Jina/Cohere's shape (and TEI's on /rerank).

No reranker GGUF can be fetched here, so SmolLM2 is served with rank pooling: llama.cpp gives a
causal LM one score per input too (meaningless as relevance, exact as arithmetic). The scores are
checked against llama.cpp itself, run in this process on the same tokens."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from tests.support import oneshot
from tests.support.engine import EngineProcess, running_engine

pytestmark = pytest.mark.integration

QUERY = "What is the capital of France?"
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany.", "France"]


@pytest.fixture(scope="module")
def engine(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    flags = ("--embeddings", "--pooling", "rank", "--parallel-slots", "4")
    with running_engine(smollm2_path, tmp_path_factory.mktemp("rerank"), *flags) as running:
        yield running


def llama_cpp_scores(model_path: Path, inputs: list[list[int]]) -> list[float]:
    """Each input alone through llama.cpp with rank pooling: the reference."""
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = 512, 512, 512
    cparams.embeddings, cparams.pooling_type = True, llama_cpp.LLAMA_POOLING_TYPE_RANK
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    scores = []
    try:
        for tokens in inputs:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            array = (llama_cpp.llama_token * len(tokens))(*tokens)
            assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(tokens))) == 0
            pointer = llama_cpp.llama_get_embeddings_seq(ctx, 0)
            scores.append(float(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))[0]))
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return scores


def tokens(engine: EngineProcess, text: str) -> list[int]:
    body = oneshot.post(
        f"{engine.url}/tokenize", json={"content": text, "add_special": False}, timeout=30
    ).json()
    return list(body["tokens"])


def test_scores_are_llama_cpps_and_results_come_best_first(engine: EngineProcess, smollm2_path: Path) -> None:
    answer = oneshot.post(
        f"{engine.url}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r["document"]["text"] == DOCUMENTS[r["index"]] for r in results)
    # SmolLM2's vocabulary adds no BOS/EOS/SEP around inputs: the pair is the query then the document.
    inputs = [tokens(engine, QUERY) + tokens(engine, doc) for doc in DOCUMENTS]
    assert body["usage"]["prompt_tokens"] == sum(map(len, inputs))
    expected = llama_cpp_scores(smollm2_path, inputs)
    by_index = {r["index"]: r["relevance_score"] for r in results}
    assert len(set(expected)) == len(DOCUMENTS)  # distinct scores: the comparison means something
    assert [by_index[i] for i in range(len(DOCUMENTS))] == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_top_n_tei_shape_and_bad_requests(engine: EngineProcess) -> None:
    ask = {"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": False}
    top = oneshot.post(f"{engine.url}/v1/rerank", json=ask, timeout=60).json()
    assert len(top["results"]) == 2
    assert "document" not in top["results"][0]
    tei = oneshot.post(
        f"{engine.url}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True}, timeout=60
    )
    assert tei.status_code == 200, tei.text
    assert [set(item) for item in tei.json()] == [{"index", "score", "text"}] * len(DOCUMENTS)
    assert [i["index"] for i in tei.json()] == [r["index"] for r in top["results"]] + [
        i["index"] for i in tei.json()[2:]
    ]
    for bad in ({"query": QUERY, "documents": []}, {"query": "", "documents": ["x"]}, {"query": QUERY}):
        refused = oneshot.post(f"{engine.url}/v1/rerank", json=bad, timeout=30)
        assert refused.status_code == 400, bad
