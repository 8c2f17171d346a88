"""POST /v1/rerank (also /rerank, /reranking, /v1/reranking, as llama-server): a reranker model
scores each document against the query.

Two request shapes, as llama-server takes them: Jina/Cohere's (``query``, ``documents``,
``top_n``, ``return_documents``) answered with ``results`` sorted by ``relevance_score``, and
Hugging Face TEI's (``query``, ``texts``, ``return_text``) answered with a bare list of
``{index, score}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llamafleet.protocol import openai
from llamafleet.protocol.endpoint import Endpoint
from llamafleet.protocol.openai import ModelName


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelName = Field(
        default="", description="Model name or alias (empty: the gateway's default model)"
    )
    query: str = Field(min_length=1)
    documents: list[str] | None = Field(default=None, description="Jina/Cohere: the texts to score")
    texts: list[str] | None = Field(default=None, description="TEI: the texts to score")
    top_n: int | None = Field(default=None, ge=1, description="Only the best N (default: all)")
    return_documents: bool = Field(default=True, description="Jina/Cohere: echo each document's text")
    return_text: bool = Field(default=False, description="TEI: echo each text")

    @model_validator(mode="after")
    def _one_list(self) -> RerankRequest:
        if (self.documents is None) == (self.texts is None):
            raise ValueError("give documents (or TEI's texts), not both")
        if not self.candidates():
            raise ValueError("documents must not be empty")
        return self

    @property
    def tei(self) -> bool:
        return self.texts is not None

    def candidates(self) -> list[str]:
        return list(self.texts if self.texts is not None else self.documents or [])

    def answer(self, model: str, scores: list[float], prompt_tokens: int) -> dict[str, Any] | list[Any]:
        """The answer in the request's own shape, best first."""
        texts = self.candidates()
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: self.top_n]
        if self.tei:
            return [{"index": i, "score": scores[i]} | ({"text": texts[i]} if self.return_text else {})
                    for i in order]  # fmt: skip
        results = [{"index": i, "relevance_score": scores[i]}
                   | ({"document": {"text": texts[i]}} if self.return_documents else {})
                   for i in order]  # fmt: skip
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return {"object": "list", "model": model, "results": results, "usage": usage}


ENDPOINTS = (Endpoint("/v1/rerank", "rerank", RerankRequest, openai.usage),)
