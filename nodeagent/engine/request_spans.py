"""The engine's spans of one sequence (llamafleet/core/tracing.py), made when it ends, while tracing is on.

``engine generate`` (server; under the gateway's ``traceparent``): arrival to the last token, with the
model, the prompt's tokens and how many came from the prompt cache, the tokens generated and the time
to the first token. Under it ``engine.queue`` (waiting for a slot), ``engine.prefill`` (its prompt
computed, to the first token) and ``engine.decode`` (the first token to the last).
"""

from __future__ import annotations

import time

from llamafleet.core import tracing
from nodeagent.engine.sequence import Sequence


def record_spans(seq: Sequence, model: str, error: str = "") -> None:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = tracing.tracer()
    end = time.monotonic()
    admitted = seq.admitted_at or end
    first = seq.first_token_at
    attributes = {
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": len(seq.prompt),
        "gen_ai.usage.output_tokens": seq.generated,
        "llamafleet.cached_tokens": seq.cached_tokens,
        "llamafleet.request_id": seq.request_id,
        "llamafleet.tenant": seq.tenant,
    }
    if first:
        attributes["llamafleet.ttft_s"] = round(first - seq.arrived, 6)
    server = tracer.start_span(f"engine {seq.kind}", tracing.parent(seq.trace), kind=SpanKind.SERVER,
                               start_time=tracing.epoch_ns(seq.arrived), attributes=attributes)  # fmt: skip
    under = tracing.child_of(server)
    tracer.start_span("engine.queue", under, start_time=tracing.epoch_ns(seq.arrived)).end(
        tracing.epoch_ns(admitted)
    )
    if seq.admitted_at:
        counts = {"gen_ai.usage.input_tokens": len(seq.prompt), "llamafleet.cached_tokens": seq.cached_tokens}
        prefill = tracer.start_span(
            "engine.prefill", under, start_time=tracing.epoch_ns(admitted), attributes=counts
        )
        prefill.end(tracing.epoch_ns(first or end))
    if first:
        decode = tracer.start_span("engine.decode", under, start_time=tracing.epoch_ns(first),
                                   attributes={"gen_ai.usage.output_tokens": seq.generated})  # fmt: skip
        decode.end(tracing.epoch_ns(end))
    if error:
        server.set_status(Status(StatusCode.ERROR, error))
    server.end(tracing.epoch_ns(end))
