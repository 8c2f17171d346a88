"""What logs, errors and statuses show of a URL: never a password or a presigned signature."""

from __future__ import annotations

import pytest

from llamafleet.core.logs import shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis.example:6379/0", "redis://redis.example:6379/0"),
        ("rediss://user:s3cret@redis.example/0", "rediss://redis.example/0"),
        (
            "https://bucket.s3.example/m.gguf?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://bucket.s3.example/m.gguf?…",
        ),
        ("https://[::1]:8443/m.gguf", "https://[::1]:8443/m.gguf"),
        ("hf://org/repo/m.gguf", "hf://org/repo/m.gguf"),
        ("/models/m.gguf", "/models/m.gguf"),
        ("builtin:smollm2-135m", "builtin:smollm2-135m"),
    ],
)
def test_secrets_in_urls_are_never_shown(url: str, shown: str) -> None:
    assert shown_url(url) == shown
