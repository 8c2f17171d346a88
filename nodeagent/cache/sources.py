"""What a model's ``source`` names, parsed once: a builtin model, a local file, a URL, or Hugging Face.

builtin:smollm2-135m
/models/qwen-7b-q4_k_m.gguf                  file:///models/…, a PVC-mounted path on Kubernetes
https://host/path/model.gguf                 http:// too
hf://ORG/REPO/FILE.gguf                      one file of a Hugging Face repository
hf://ORG/REPO:Q4_K_M                         a quantization, resolved to its file (or shards)
hf://ORG/REPO                                Q4_K_M, as llama.cpp's -hf picks by default
…@REVISION                                   on hf://: a branch, tag or commit (default: main)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from llamafleet.core.errors import InvalidRequest

DEFAULT_QUANT = "Q4_K_M"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class Builtin:
    name: str


@dataclass(frozen=True)
class Local:
    path: Path


@dataclass(frozen=True)
class Url:
    url: str

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name or "model.gguf"


@dataclass(frozen=True)
class HuggingFace:
    repo: str
    file: str = ""  # a file in the repository; empty: pick by quant
    quant: str = ""
    revision: str = "main"


Source = Builtin | Local | Url | HuggingFace


def parse(source: str) -> Source:
    if source.startswith("builtin:"):
        return Builtin(source.removeprefix("builtin:"))
    if source.startswith("hf://"):
        return _huggingface(source)
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise InvalidRequest(f"model source {source!r} has no host", "source")
        return Url(source)
    if parsed.scheme == "file":
        return Local(Path(parsed.path))
    if not parsed.scheme and source.startswith("/"):
        return Local(Path(source))
    raise InvalidRequest(
        f"unsupported model source {source!r}; use builtin:NAME, an absolute path, an http(s) URL or "
        "hf://ORG/REPO[:QUANT|/FILE.gguf][@REVISION]",
        "source",
    )


def _huggingface(source: str) -> HuggingFace:
    rest = source.removeprefix("hf://")
    revision = "main"
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    quant = ""
    if ":" in rest:
        rest, quant = rest.split(":", 1)
    parts = rest.split("/")
    repo, file = "/".join(parts[:2]), "/".join(parts[2:])
    if not _REPO.match(repo) or not revision or (file and quant):
        raise InvalidRequest(
            f"model source {source!r}: write hf://ORG/REPO/FILE.gguf or hf://ORG/REPO:QUANT, optionally "
            "followed by @REVISION",
            "source",
        )
    return HuggingFace(repo, file, quant, revision)


def shards(filename: str, available: list[str]) -> list[str]:
    """Every shard of a split GGUF (``…-00001-of-00003.gguf``) in order; ``[filename]`` if it is whole."""
    match = _SHARD.match(Path(filename).name)
    if match is None:
        return [filename]
    count = int(match["count"])
    folder = str(Path(filename).parent)
    prefix = "" if folder == "." else f"{folder}/"
    wanted = [f"{prefix}{match['prefix']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [w for w in wanted if w not in available]
    if missing:
        raise InvalidRequest(f"split model {filename}: shard {missing[0]} is missing", "source")
    return wanted


def pick_quant(files: list[str], quant: str) -> str:
    """The file a quantization tag names, as llama.cpp's -hf picks it: a .gguf whose name carries the
    tag (case-insensitive, between separators), the first shard of a split one; no projector files."""
    tag = (quant or DEFAULT_QUANT).upper()
    candidates = []
    for name in files:
        base = Path(name).name
        if not base.endswith(".gguf") or "mmproj" in base.lower():
            continue
        tokens = re.split(r"[-._/]", base.upper().removesuffix(".GGUF"))
        joined = "-".join(tokens)
        if tag in tokens or f"-{tag.replace('_', '-')}-" in f"-{joined}-":
            match = _SHARD.match(base)
            if match is None or int(match["index"]) == 1:
                candidates.append(name)
    if not candidates:
        ggufs = sorted(n for n in files if n.endswith(".gguf") and "mmproj" not in n.lower())
        if not quant and ggufs:
            return ggufs[0]
        raise InvalidRequest(
            f"no {tag} GGUF in the repository (files: {', '.join(ggufs[:8]) or 'none'})", "source"
        )
    return sorted(candidates, key=len)[0]
