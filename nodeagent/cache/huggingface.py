"""hf:// sources: which files of a Hugging Face repository a source names, through ``huggingface_hub``.

One call lists the repository's tree at the revision (``HfApi.list_repo_tree``: file names, sizes
and the LFS sha256 of each), honouring ``HF_ENDPOINT`` (a mirror, an air-gapped hub) and a token.
The files themselves are then fetched by the node cache's own downloader (Range resume, progress)
from ``hf_hub_url``, and checked against the sha256 the hub lists.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from llamafleet.core.errors import ModelNotFound, SourceDenied, Unavailable
from nodeagent.cache.sources import HuggingFace, pick_quant, shards


@dataclass(frozen=True)
class RemoteFile:
    name: str  # its path in the repository
    url: str
    size: int
    sha256: str  # from the hub's LFS pointer ('' for a file stored without LFS)


def _list(source: HuggingFace, endpoint: str | None, token: str | None) -> list[RepoFile]:
    api = HfApi(endpoint=endpoint, token=token or False)
    tree = api.list_repo_tree(source.repo, revision=source.revision, recursive=True)
    return [entry for entry in tree if isinstance(entry, RepoFile)]


async def resolve(source: HuggingFace, endpoint: str | None, token: str | None) -> list[RemoteFile]:
    """The file (or every shard) ``source`` names, in load order."""
    where = f"hf://{source.repo}@{source.revision}"
    try:
        files = await asyncio.to_thread(_list, source, endpoint, token)
    except GatedRepoError:
        raise SourceDenied(f"{where} is gated: accept its terms and give a token (HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{where}: no such repository (or a private one: give a token)") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"{where}: no such revision") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise SourceDenied(f"{where}: HTTP {status} (give a token: HF_TOKEN)") from None
        raise Unavailable(f"{where}: the hub answered HTTP {status or '?'}", retry_after=30) from None
    except OSError as exc:  # the hub is unreachable
        raise Unavailable(f"{where}: cannot reach the hub ({exc})", retry_after=30) from None
    by_name = {f.path: f for f in files}
    if source.file:
        if source.file not in by_name:
            raise ModelNotFound(f"{where}: no file {source.file}")
        first = source.file
    else:
        first = pick_quant(sorted(by_name), source.quant)
    out = []
    for name in shards(first, sorted(by_name)):
        entry = by_name[name]
        url = hf_hub_url(source.repo, name, revision=source.revision, endpoint=endpoint)
        out.append(RemoteFile(name, url, entry.size, entry.lfs.sha256 if entry.lfs is not None else ""))
    return out
