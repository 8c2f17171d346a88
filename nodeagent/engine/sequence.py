"""A request in flight inside the batcher (a *sequence*), the slot that serves it, and what it emits.

The HTTP side builds a ``Sequence`` and reads ``Delta``s from its inbox; the batcher thread
owns every field below the "batcher state" line.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llamafleet.core.errors import LlamafleetError
from nodeagent.engine.logprobs import TokenLogprob
from nodeagent.engine.sampling import SamplerChain, SamplingParams
from nodeagent.engine.speculative import DraftStats
from nodeagent.engine.text import TextStream

if TYPE_CHECKING:
    from nodeagent.engine.host_cache import SavedState

# A set of LoRA adapters with their scales, sorted by name; () is the base model.
AdapterKey = tuple[tuple[str, float], ...]
FinishReason = Literal["stop", "length"]

_ids = itertools.count()


@dataclass(frozen=True)
class Timings:
    """Where one request's time went, in llama-server's ``timings`` shape (web UIs show tokens/s)."""

    cache_n: int  # prompt tokens taken from the prompt cache
    prompt_n: int  # prompt tokens computed
    prompt_ms: float  # from taking a slot to the first sampled token
    predicted_n: int
    predicted_ms: float  # from the first sampled token to the end

    def llama_server(self) -> dict[str, Any]:
        def per(ms: float, n: int) -> tuple[float, float]:
            return (ms / n if n else 0.0), (1000.0 * n / ms if ms > 0 else 0.0)

        prompt_per_token, prompt_per_second = per(self.prompt_ms, self.prompt_n)
        predicted_per_token, predicted_per_second = per(self.predicted_ms, self.predicted_n)
        return {
            "cache_n": self.cache_n,
            "prompt_n": self.prompt_n,
            "prompt_ms": round(self.prompt_ms, 3),
            "prompt_per_token_ms": round(prompt_per_token, 3),
            "prompt_per_second": round(prompt_per_second, 3),
            "predicted_n": self.predicted_n,
            "predicted_ms": round(self.predicted_ms, 3),
            "predicted_per_token_ms": round(predicted_per_token, 3),
            "predicted_per_second": round(predicted_per_second, 3),
        }


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    timings: Timings | None = None
    prediction: tuple[int, int] | None = None  # with a prediction: (accepted, rejected) draft tokens

    def openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        } | self._completion_details()

    def _completion_details(self) -> dict[str, Any]:
        if self.prediction is None:
            return {}
        accepted, rejected = self.prediction
        details = {"accepted_prediction_tokens": accepted, "rejected_prediction_tokens": rejected}
        return {"completion_tokens_details": details}

    def timings_field(self) -> dict[str, Any]:
        """llama-server's top-level ``timings`` beside ``usage``, when measured."""
        return {"timings": self.timings.llama_server()} if self.timings is not None else {}


@dataclass
class Delta:
    """What one step produced for one sequence. The last delta has ``finish_reason`` or ``error``."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: LlamafleetError | None = None
    embedding: list[float] | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # tokens since the last delta (if asked)
    stop_word: str = ""  # the stop string that ended generation ("" for end-of-generation or length)

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


@dataclass(eq=False)
class Sequence:
    kind: Literal["generate", "embed"]
    prompt: list[int]
    inbox: Any  # where the batcher's poster delivers Deltas (an asyncio.Queue on the HTTP side)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stops: list[str] = field(default_factory=list)
    adapters: AdapterKey = ()
    request_id: str = ""
    top_logprobs: int | None = None  # None: no logprobs; n: each token's and the n most likely
    speculative: bool = True  # False: this request opts out of the engine's speculative decoding
    predicted: list[int] = field(default_factory=list)  # OpenAI's prediction: a source of drafts
    cancelled: bool = False  # set by the HTTP side; the batcher frees the slot at its next step
    tenant: str = ""  # whose request it is (the gateway's x-llamafleet-tenant)
    preempts: str = ""  # the tenant one of whose running requests it may suspend when no slot is free
    trace: dict[str, str] = field(default_factory=dict)  # the request's W3C trace context headers
    admitted_at: float = 0.0  # when a slot took it (monotonic)
    first_token_at: float = 0.0  # when its first token was sampled
    number: int = field(default_factory=lambda: next(_ids))
    arrived: float = field(default_factory=time.monotonic)

    # --- batcher state -----------------------------------------------------------------------
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    next_token: int | None = None  # sampled, to be decoded in the next step
    generated: int = 0
    cached_tokens: int = 0
    chain: SamplerChain | None = None
    text: TextStream | None = None
    held_logprobs: list[TokenLogprob] = field(default_factory=list)  # for tokens whose text is held
    drafter: DraftStats | None = None  # when it speculates: its verifications (an n-gram index too)
    suspended: SavedState | None = None  # its cells, while another tenant's request has its slot

    @property
    def group(self) -> tuple[str, AdapterKey]:
        """Sequences share a decode step only within one group: same kind, same adapter set."""
        return (self.kind, self.adapters if self.kind == "generate" else ())

    def usage(self) -> Usage:
        now = time.monotonic()
        first = self.first_token_at or now
        started = self.admitted_at or first
        timings = Timings(self.cached_tokens, len(self.prompt) - self.cached_tokens, (first - started) * 1000,
                          self.generated, (now - first) * 1000)  # fmt: skip
        drafter = self.drafter
        prediction = None
        if self.predicted:
            prediction = (drafter.prediction_kept, drafter.prediction_rejected) if drafter else (0, 0)
        return Usage(len(self.prompt), self.generated, self.cached_tokens, timings, prediction)


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id with the tokens its KV cells hold (the prompt cache)."""

    id: int
    cached: list[int] = field(default_factory=list)
    cache_adapters: AdapterKey = ()
    seq: Sequence | None = None
    last_used: int = 0
    prompt_tokens: int = 0  # the last prompt's length: its cells come first, then what was generated

    def view(self) -> dict[str, Any]:
        seq = self.seq
        state = "idle" if seq is None else ("prefill" if seq.pending else "generating")
        return {
            "id": self.id,
            "state": state,
            "cached_tokens": len(self.cached),
            "adapters": [{"name": n, "scale": s} for n, s in self.cache_adapters],
            "request": None
            if seq is None
            else {
                "id": seq.request_id,
                "kind": seq.kind,
                "prompt_tokens": len(seq.prompt),
                "prompt_cached_tokens": seq.cached_tokens,
                "prompt_pending_tokens": len(seq.pending),
                "generated_tokens": seq.generated,
                "max_tokens": seq.max_tokens,
                "running_seconds": round(time.monotonic() - seq.arrived, 3),
            },
        }


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
