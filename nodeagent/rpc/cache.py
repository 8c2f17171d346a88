"""The RPC worker's tensor cache: llama.cpp keeps large tensors it received by content hash, so a
head that loads the same model again sends hashes instead of weights. Kept under a size cap by
removing the least recently used files when a worker starts."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def prune(folder: Path, max_bytes: int) -> int:
    """Remove the least recently used files until the folder holds at most ``max_bytes``; bytes freed."""
    files = []
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            files.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    total = sum(size for _, size, _ in files)
    freed = 0
    for _, size, path in sorted(files):
        if total - freed <= max_bytes:
            break
        try:
            path.unlink()
        except OSError:
            continue
        freed += size
    if freed:
        log.info("tensor cache %s: removed %d MiB of least recently used tensors (cap %d MiB)",
                 folder, freed >> 20, max_bytes >> 20)  # fmt: skip
    return freed
