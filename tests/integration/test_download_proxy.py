"""Downloads behind a proxy (issue 34): HTTPS_PROXY / HTTP_PROXY / NO_PROXY as curl takes them, against a
forward proxy the test runs (tests/support/http_proxy.py) and the real file server and hub emulation."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub.utils import close_session

from llamafleet.core.errors import SourceDenied
from llamafleet.security import pki
from nodeagent.cache.store import ModelStore
from tests.support.file_server import file_server
from tests.support.http_proxy import http_proxy

pytestmark = pytest.mark.integration

MiB = 2**20
PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "ALL_PROXY",
)


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    close_session()  # the hub client keeps one session: made anew with this test's environment
    yield
    close_session()


def blob(folder: Path, size: int = MiB) -> tuple[Path, str]:
    path = folder / "m.gguf"
    path.write_bytes(hashlib.sha256(b"seed").digest() * (size // 32))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_https_goes_through_a_connect_tunnel_with_the_proxys_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, digest = blob(tmp_path)
    pki.init_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "pki" / "ca.crt"))  # trust the file server's CA
    with file_server(tls=tmp_path / "pki") as secure, http_proxy("corp", "s3cret p@ss") as (proxy, seen):
        url = secure.add("m.gguf", original)
        monkeypatch.setenv("HTTPS_PROXY", proxy.replace("s3cret p@ss", "s3cret%20p%40ss"))
        path = asyncio.run(ModelStore(tmp_path / "cache").fetch(url, digest))
        assert path.read_bytes() == original.read_bytes()
        port = url.split(":")[2].split("/")[0]
        assert seen.requests == [f"CONNECT 127.0.0.1:{port}"]  # TLS end to end: the proxy saw the host only
        assert seen.credentials == ["corp:s3cret p@ss"]


def test_http_goes_to_the_proxy_with_the_full_url_and_no_proxy_goes_direct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, digest = blob(tmp_path)
    with file_server() as server, http_proxy() as (proxy, seen):
        url = server.add("m.gguf", original)
        monkeypatch.setenv("http_proxy", proxy)  # lower case, as many images set it
        asyncio.run(ModelStore(tmp_path / "proxied").fetch(url, digest))
        assert seen.requests == [f"GET {url}"]
        assert server.requests["m.gguf"] == 1
        for exempt in (
            "127.0.0.1",
            "localhost,.example.com,127.0.0.1:" + url.split(":")[2].split("/")[0],
            "*",
        ):
            monkeypatch.setenv("NO_PROXY", exempt)
            asyncio.run(ModelStore(tmp_path / f"direct-{len(exempt)}").fetch(url, digest))
        assert seen.requests == [f"GET {url}"]  # nothing more through the proxy
        assert server.requests["m.gguf"] == 4
        monkeypatch.setenv("NO_PROXY", "127.0.0.2,example.com")  # others' hosts: still proxied
        asyncio.run(ModelStore(tmp_path / "proxied-again").fetch(url, digest))
        assert len(seen.requests) == 2


def test_the_hub_client_lists_through_the_proxy_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original, _ = blob(tmp_path)
    with file_server() as hub, http_proxy() as (proxy, seen):
        hub.add_repo("org/r", {"x-Q4_K_M.gguf": original})
        monkeypatch.setenv("HTTP_PROXY", proxy)
        path = asyncio.run(ModelStore(tmp_path / "cache", hf_endpoint=hub.url).fetch("hf://org/r"))
        assert path.read_bytes() == original.read_bytes()
    assert any("/api/models/org/r/tree/" in r for r in seen.requests), seen.requests  # the listing
    assert any("/org--r--x-Q4_K_M.gguf" in r or "/files/" in r for r in seen.requests), (
        seen.requests
    )  # the file


def test_a_proxy_that_is_not_http_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(SourceDenied, match=r"only http:// proxies"):
        asyncio.run(ModelStore(tmp_path / "cache").fetch("https://models.example.com/m.gguf", "0" * 64))
