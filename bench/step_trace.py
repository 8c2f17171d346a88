"""Run the engine (or bench/batcher_only.py) with every llama_decode timed, for bench/serving_profile.py.

    .venv/bin/python bench/step_trace.py OUT.json engine ENGINE-ARGS...
    .venv/bin/python bench/step_trace.py OUT.json batcher MODEL.gguf BATCHER-ONLY-ARGS...

Wraps NativeModel.decode to record (start, end, batch tokens) of each step, and writes them at
exit with the native thread ids of the batcher thread (the one that calls llama_decode) and of
the main thread (the engine's event loop), so per-thread CPU time read from /proc can be told
apart. Nothing else changes: the engine is the one `python -m nodeagent.engine` runs.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nodeagent.engine import native  # noqa: E402

steps: list[tuple[float, float, int]] = []
threads: dict[str, int] = {"main": threading.get_native_id()}
_decode = native.NativeModel.decode


def timed_decode(self: native.NativeModel) -> None:
    threads.setdefault("batcher", threading.get_native_id())
    started = time.perf_counter()
    try:
        _decode(self)
    finally:
        steps.append((started, time.perf_counter(), self.batch.n))


def main() -> None:
    out, target, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    native.NativeModel.decode = timed_decode  # type: ignore[method-assign]
    atexit.register(lambda: out.write_text(json.dumps({"steps": steps, "threads": threads})))
    if target == "engine":
        from nodeagent.engine.__main__ import main as engine_main

        sys.exit(engine_main(args))
    sys.argv = [str(REPO / "bench" / "batcher_only.py"), *args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
