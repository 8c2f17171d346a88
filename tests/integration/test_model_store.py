"""The node's model cache against a real HTTP server (tests/support/file_server.py) with injected
faults, and its Hugging Face emulation: resume, checksums, one download per file, LRU eviction
that spares files in use, a full disk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafleet.core.errors import ChecksumMismatch, DiskFull, ModelNotFound, SourceDenied
from llamafleet.security import pki
from nodeagent.cache.store import ModelStore
from tests.support.file_server import Fault, FileServer, file_server

pytestmark = pytest.mark.integration

MiB = 1 << 20


def blob(folder: Path, name: str, size: int, seed: int = 0) -> Path:
    path = folder / name
    path.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (size // 32))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with file_server() as running:
        yield running


def test_a_url_is_fetched_once_checked_and_kept(tmp_path: Path, server: FileServer) -> None:
    original = blob(tmp_path, "m.gguf", 4 * MiB)
    url = server.add("m.gguf", original)
    store = ModelStore(tmp_path / "cache")

    async def run() -> tuple[Path, ...]:
        return tuple(await asyncio.gather(*(store.fetch(url, sha(original)) for _ in range(3))))

    paths = asyncio.run(run())
    assert len(set(paths)) == 1
    assert server.requests["m.gguf"] == 1  # three asks, one download
    assert paths[0].read_bytes() == original.read_bytes()
    assert paths[0].name == "m.gguf"
    assert paths[0].resolve().name == f"sha256-{sha(original)}"
    again = ModelStore(tmp_path / "cache")  # a restarted agent finds it
    assert asyncio.run(again.fetch(url)) == paths[0]
    assert server.requests["m.gguf"] == 1


def test_a_cut_download_resumes_where_it_stopped(tmp_path: Path, server: FileServer) -> None:
    original = blob(tmp_path, "big.gguf", 16 * MiB)
    url = server.add("big.gguf", original)
    server.faults["big.gguf"] += [Fault(drop_after=5 * MiB), Fault(status=503), Fault(drop_after=3 * MiB)]
    path = asyncio.run(ModelStore(tmp_path / "cache").fetch(url, sha(original)))
    assert path.read_bytes() == original.read_bytes()
    assert server.sent["big.gguf"] == 16 * MiB  # no byte fetched twice across four attempts
    assert server.requests["big.gguf"] == 4


def test_an_agent_stopping_mid_download_ends_it_at_once_and_the_next_one_resumes(
    tmp_path: Path, server: FileServer
) -> None:
    original = blob(tmp_path, "slow.gguf", 16 * MiB)
    url = server.add("slow.gguf", original)
    server.pace_s = 0.05
    cache = tmp_path / "cache"

    async def leave_midway() -> float:
        """Start the download and return once 4 MiB are on disk, the link stalled: asyncio.run then
        cancels the download, as an agent's shutdown does."""
        fetching = asyncio.ensure_future(ModelStore(cache).fetch(url, sha(original)))
        partial = cache / "partial"
        for _ in range(500):  # 10 s at most
            if any(p.stat().st_size >= 4 * MiB for p in partial.glob("*")):
                break
            await asyncio.sleep(0.02)
        server.pace_s = 3.0  # the receiving thread now waits in recv()
        await asyncio.sleep(0.2)
        assert not fetching.done()
        return time.monotonic()

    left = asyncio.run(leave_midway())
    assert time.monotonic() - left < 1.0  # its socket was closed under it
    assert not [t for t in threading.enumerate() if t.name.startswith("download")]
    server.pace_s = 0.0
    path = asyncio.run(ModelStore(cache).fetch(url, sha(original)))
    assert path.read_bytes() == original.read_bytes()
    resumed_at = int(server.seen["slow.gguf"][1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert resumed_at >= 4 * MiB


def test_a_token_is_not_sent_along_a_redirect_to_another_host(tmp_path: Path, server: FileServer) -> None:
    original = blob(tmp_path, "m.gguf", MiB)
    with file_server() as cdn:
        target = cdn.add("m.gguf", original)
        url = server.add("m.gguf", original)
        server.faults["m.gguf"].append(Fault(redirect_to=target))
        store = ModelStore(tmp_path / "cache", headers_for=lambda _url: {"Authorization": "Bearer secret"})
        path = asyncio.run(store.fetch(url, sha(original)))
        assert path.read_bytes() == original.read_bytes()
        assert server.seen["m.gguf"][0]["Authorization"] == "Bearer secret"
        assert "Authorization" not in cdn.seen["m.gguf"][0]


def test_no_configured_header_follows_a_redirect_to_another_origin(
    tmp_path: Path, server: FileServer
) -> None:
    """Every header from the download-headers file is the origin's credential, not only Authorization."""
    original = blob(tmp_path, "m.gguf", MiB)
    with file_server() as cdn:
        server.add("m.gguf", original)
        server.faults["m.gguf"].append(Fault(redirect_to=cdn.add("m.gguf", original)))
        credentials = {"Authorization": "Bearer secret", "X-JFrog-Art-Api": "key", "Cookie": "s=1"}
        store = ModelStore(tmp_path / "cache", headers_for=lambda _url: credentials)
        asyncio.run(store.fetch(f"{server.url}/files/m.gguf", sha(original)))
        assert {k: server.seen["m.gguf"][0][k] for k in credentials} == credentials
        assert not set(credentials) & set(cdn.seen["m.gguf"][0])


def test_a_redirect_from_https_to_http_is_refused(
    tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = blob(tmp_path, "m.gguf", MiB)
    pki.init_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "pki" / "ca.crt"))  # the client trusts the test CA
    with file_server(tls=tmp_path / "pki") as secure:
        url = secure.add("m.gguf", original)
        assert (
            asyncio.run(ModelStore(tmp_path / "ok").fetch(url, sha(original))).read_bytes()
            == original.read_bytes()
        )
        secure.faults["m.gguf"].append(Fault(redirect_to=server.add("m.gguf", original)))
        with pytest.raises(SourceDenied, match="from https to http"):
            asyncio.run(ModelStore(tmp_path / "cache").fetch(url, sha(original)))
        assert server.requests["m.gguf"] == 0  # nothing was fetched over plain http


def test_a_plain_http_source_needs_its_sha256_or_the_operators_consent(
    tmp_path: Path, server: FileServer
) -> None:
    original = blob(tmp_path, "m.gguf", MiB)
    url = server.add("m.gguf", original)
    with pytest.raises(SourceDenied, match=r"plain http with no sha256 .* --supervisor-allow-plain-http"):
        asyncio.run(ModelStore(tmp_path / "refused").fetch(url))
    assert server.requests["m.gguf"] == 0  # refused before anything was fetched
    assert (
        asyncio.run(ModelStore(tmp_path / "pinned").fetch(url, sha(original))).read_bytes()
        == original.read_bytes()
    )
    allowed = ModelStore(tmp_path / "allowed", allow_plain_http=True)
    assert asyncio.run(allowed.fetch(url)).read_bytes() == original.read_bytes()


def test_a_download_stops_at_the_announced_size_or_the_configured_maximum(
    tmp_path: Path, server: FileServer
) -> None:
    original = blob(tmp_path, "m.gguf", 4 * MiB)
    url = server.add("m.gguf", original)
    capped = ModelStore(tmp_path / "capped", download_max=MiB, allow_plain_http=True)
    with pytest.raises(DiskFull, match=r"--supervisor-download-max: .* announces 4194304 bytes"):
        asyncio.run(capped.fetch(url))
    server.faults["m.gguf"].append(Fault(unsized=True))  # no Content-Length: the cap stops it mid-body
    with pytest.raises(DiskFull, match="went past 1048576 bytes"):
        asyncio.run(capped.fetch(url))
    partials = list((tmp_path / "capped" / "partial").iterdir())
    assert all(p.stat().st_size <= MiB for p in partials)
    server.faults["m.gguf"].append(Fault(unsized=True))
    assert (
        asyncio.run(ModelStore(tmp_path / "free").fetch(url, sha(original))).read_bytes()
        == original.read_bytes()
    )


def test_a_server_that_ignores_range_and_a_short_body_still_give_the_right_file(
    tmp_path: Path, server: FileServer
) -> None:
    original = blob(tmp_path, "m.gguf", 4 * MiB)
    url = server.add("m.gguf", original)
    server.faults["m.gguf"] += [Fault(drop_after=MiB), Fault(ignore_range=True, short=True)]
    path = asyncio.run(ModelStore(tmp_path / "cache").fetch(url, sha(original)))
    assert sha(path) == sha(original)


def test_a_wrong_sha256_loads_nothing_and_the_right_one_needs_no_second_download(
    tmp_path: Path, server: FileServer
) -> None:
    original = blob(tmp_path, "m.gguf", MiB)
    url = server.add("m.gguf", original)
    store = ModelStore(tmp_path / "cache")
    with pytest.raises(ChecksumMismatch, match="is not the expected"):
        asyncio.run(store.fetch(url, "0" * 64))
    assert asyncio.run(store.fetch(url, sha(original))).read_bytes() == original.read_bytes()
    assert server.requests["m.gguf"] == 1  # the file's sha256 was recorded with it


def test_a_transfer_that_does_not_match_the_hubs_sha256_is_discarded(
    tmp_path: Path, server: FileServer
) -> None:
    listed = blob(tmp_path, "listed", MiB, seed=1)
    server.add_repo("org/r", {"x-Q4_K_M.gguf": listed})
    store = ModelStore(tmp_path / "cache", hf_endpoint=server.url)
    server.listed["org--r--x-Q4_K_M.gguf"] = listed  # the hub lists the original's sha256 …
    server.files["org--r--x-Q4_K_M.gguf"] = blob(tmp_path, "tampered", MiB, seed=2)  # … and serves another
    with pytest.raises(ChecksumMismatch):
        asyncio.run(store.fetch("hf://org/r"))
    assert store.cached("hf://org/r") is None
    assert not list((tmp_path / "cache" / "blobs").glob("*"))


def test_http_errors_are_precise(tmp_path: Path, server: FileServer) -> None:
    store = ModelStore(tmp_path / "cache", allow_plain_http=True)
    with pytest.raises(ModelNotFound, match="404"):
        asyncio.run(store.fetch(f"{server.url}/files/nope.gguf"))
    url = server.add("m.gguf", blob(tmp_path, "m.gguf", MiB))
    server.faults["m.gguf"].append(Fault(status=403))
    with pytest.raises(SourceDenied, match="403"):
        asyncio.run(store.fetch(url))


def test_eviction_takes_the_least_recently_used_file_and_never_one_in_use(
    tmp_path: Path, server: FileServer
) -> None:
    urls = [server.add(f"m{i}.gguf", blob(tmp_path, f"m{i}.gguf", 3 * MiB, seed=i)) for i in range(3)]
    in_use: set[str] = set()
    store = ModelStore(tmp_path / "cache", max_bytes=7 * MiB, in_use=lambda: in_use, allow_plain_http=True)
    asyncio.run(store.fetch(urls[0]))
    asyncio.run(store.fetch(urls[1]))
    in_use.add(urls[0])  # a replica runs m0: m1 is the one to go, though m0 is older
    asyncio.run(store.fetch(urls[2]))
    assert store.cached(urls[0]) is not None
    assert store.cached(urls[1]) is None
    assert store.cached(urls[2]) is not None
    in_use.add(urls[2])
    with pytest.raises(DiskFull, match="in use by replicas"):
        asyncio.run(store.fetch(urls[1]))  # 3 MiB more cannot fit while both run


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0 or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_an_error_that_names_it(tmp_path: Path, server: FileServer, tiny_disk: Path) -> None:
    url = server.add("m.gguf", blob(tmp_path, "m.gguf", 4 * MiB))
    with pytest.raises(DiskFull, match="no space left on this node"):
        asyncio.run(ModelStore(tiny_disk / "cache", allow_plain_http=True).fetch(url))


def test_hugging_face_quant_tags_shards_and_gated_repos(tmp_path: Path, server: FileServer) -> None:
    shards = {f"model-Q4_K_M-0000{i}-of-00003.gguf": blob(tmp_path, f"s{i}", MiB, seed=i) for i in (1, 2, 3)}
    server.add_repo("org/split", {**shards, "model-Q8_0.gguf": blob(tmp_path, "q8", MiB, seed=8),
                                  "mmproj-Q4_K_M.gguf": blob(tmp_path, "mm", MiB, seed=9)})  # fmt: skip
    server.add_repo("org/gated", {"x-Q4_K_M.gguf": blob(tmp_path, "g", MiB, seed=10)})
    server.gated.add("org/gated")
    store = ModelStore(tmp_path / "cache", hf_endpoint=server.url)
    first = asyncio.run(store.fetch("hf://org/split:Q4_K_M"))
    assert first.name == "model-Q4_K_M-00001-of-00003.gguf"
    assert sorted(p.name for p in first.parent.iterdir()) == sorted(shards)  # shards side by side
    for name, original in shards.items():
        assert sha(first.parent / name) == sha(original)
    q8 = asyncio.run(store.fetch("hf://org/split/model-Q8_0.gguf@main"))
    assert q8.read_bytes() == (tmp_path / "q8").read_bytes()
    with pytest.raises(SourceDenied, match="gated"):
        asyncio.run(store.fetch("hf://org/gated:Q4_K_M"))
    with pytest.raises(ModelNotFound, match="no such repository"):
        asyncio.run(store.fetch("hf://org/missing:Q4_K_M"))
    token = ModelStore(tmp_path / "cache2", hf_endpoint=server.url, hf_token="hf_test")
    assert asyncio.run(token.fetch("hf://org/gated")).name == "x-Q4_K_M.gguf"  # Q4_K_M by default


def test_fit_downloads_a_source_with_a_progress_bar_into_the_node_cache(
    tmp_path: Path, server: FileServer, smollm2_path: Path
) -> None:
    url = server.add("smol.gguf", smollm2_path)
    done = subprocess.run(
        [sys.executable, "-m", "llamafleet.cli.main", "fit", url, "--ctx", "1024", "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["file_bytes"] == smollm2_path.stat().st_size
    cache = ModelStore(tmp_path / ".cache" / "llamafleet" / "agent" / "models")
    assert cache.cached(url) is not None  # where an agent on this machine finds it
    missing = subprocess.run([sys.executable, "-m", "llamafleet.cli.main", "fit", "nope.gguf"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2
    assert "no such file: nope.gguf" in missing.stderr


def test_a_local_file_is_checked_against_its_sha256_once_per_version(tmp_path: Path) -> None:
    local = blob(tmp_path, "local.gguf", MiB)
    store = ModelStore(tmp_path / "cache")
    assert asyncio.run(store.fetch(str(local), sha(local))) == local  # used where it is, not copied
    with pytest.raises(ChecksumMismatch, match="is not the expected"):
        asyncio.run(store.fetch(str(local), "1" * 64))
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert list(index["verified"].values()) == [sha(local)]  # hashed once, remembered by size and mtime
    with pytest.raises(ModelNotFound, match="does not exist on this node"):
        asyncio.run(store.fetch(str(tmp_path / "gone.gguf")))


def test_a_presigned_urls_signature_never_reaches_a_log_or_an_error(
    tmp_path: Path, server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    original = blob(tmp_path, "m.gguf", MiB)
    url = server.add("m.gguf", original) + "?X-Amz-Signature=SIGNATURE-SECRET"
    server.faults["m.gguf"].append(Fault(drop_after=1000))  # a retry, which logs the URL
    asyncio.run(ModelStore(tmp_path / "cache").fetch(url, sha(original)))
    missing = f"{server.url}/files/gone.gguf?X-Amz-Signature=SIGNATURE-SECRET"
    with pytest.raises(ModelNotFound) as refused:
        asyncio.run(ModelStore(tmp_path / "cache", allow_plain_http=True).fetch(missing))
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("nodeagent"))
    assert "downloading" in ours  # (the test server's own access log is not ours)
    assert "SIGNATURE-SECRET" not in ours
    assert "SIGNATURE-SECRET" not in refused.value.message
