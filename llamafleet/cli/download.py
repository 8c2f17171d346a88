"""Fetching a model source for a command run by hand (`llamafleet fit hf://…`), with a progress bar.

The file lands in the same node cache an agent on this machine uses (DATA_DIR/models), so a later
replica finds it there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from llamafleet.units.sizes import format_size
from nodeagent.cache.sources import Builtin, Local, parse
from nodeagent.cache.store import DownloadProgress, ModelStore
from nodeagent.settings import SupervisorSettings

BAR = 30


def bar(progress: DownloadProgress) -> str:
    if not progress.total:
        return f"{format_size(progress.done)} at {format_size(progress.rate)}/s"
    share = progress.done / progress.total
    filled = int(share * BAR)
    return (f"[{'#' * filled}{'.' * (BAR - filled)}] {share:4.0%} {format_size(progress.done)} of "
            f"{format_size(progress.total)}, {format_size(progress.rate)}/s")  # fmt: skip


def source_argument(text: str) -> str:
    """argparse type: a file that exists (relative paths too) becomes its absolute path; anything
    else is a source (a URL, hf://…)."""
    path = Path(text)
    if path.exists():
        return str(path.resolve())
    if "://" not in text and not text.startswith(("builtin:", "hf:")):
        raise argparse.ArgumentTypeError(f"no such file: {text} (nor an http(s):// or hf:// source)")
    return text


async def local_file(source: str) -> Path:
    """``source`` as a local file: a path as it is; a URL or hf:// fetched into the node cache."""
    parsed = parse(source)
    # Typed by hand: the person asks for this very URL (an agent refuses plain http with no sha256).
    store = ModelStore(SupervisorSettings().model_cache_dir(), allow_plain_http=True)
    if source.lower().startswith("http://"):
        print(f"  warning: {source} is plain http: nothing checks the file that arrives", file=sys.stderr)
    if isinstance(parsed, Local | Builtin):
        return await store.fetch(source if isinstance(parsed, Builtin) else str(parsed.path))
    fetching = asyncio.ensure_future(store.fetch(source))
    shown = False
    while not fetching.done():
        await asyncio.wait({fetching}, timeout=0.5)
        progress = store.progress(source)
        if progress is not None:
            print(f"\r  downloading {source}  {bar(progress)}", end="", file=sys.stderr, flush=True)
            shown = True
    if shown:
        print(file=sys.stderr)
    return fetching.result()
