"""API keys (hashed, scoped, re-read on change) and quotas (a sliding minute) without a network."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import yaml

from controlplane.gateway.access.api_keys import ApiKey, KeyRing, hash_key
from controlplane.gateway.access.quota import Quotas
from llamafleet.core.errors import Forbidden, QuotaExceeded


def write_keys(path: Path, *entries: dict[str, object]) -> None:
    path.write_text(yaml.safe_dump({"keys": list(entries)}))
    stamp = time.time() + len(path.read_text())  # a distinct mtime even within one clock tick
    os.utime(path, (stamp, stamp))


def test_keys_are_found_by_hash_and_a_changed_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    write_keys(path, {"name": "a", "sha256": hash_key("secret-a"), "models": ["smol", "smol:*"]})
    ring = KeyRing(path, [])
    key = ring.lookup("secret-a")
    assert key is not None
    assert key.name == "a"
    assert key.may_use("smol")
    assert key.may_use("smol:tone")
    assert not key.may_use("other")
    with pytest.raises(Forbidden, match="may not use model 'other'"):
        key.require("other")
    assert ring.lookup("secret-b") is None
    write_keys(path, {"name": "b", "sha256": hash_key("secret-b")})
    ring._checked = 0  # the next lookup checks the file (it does at most once a second)
    assert ring.lookup("secret-b") is not None
    assert ring.lookup("secret-a") is None  # revoked without a restart


def test_a_broken_keys_file_fails_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A revocation with a typo must not leave a leaked key working: no key from a file that does not
    parse is accepted until it does; plain keys (--gateway-api-keys) are not the file's."""
    path = tmp_path / "keys.yaml"
    write_keys(path, {"name": "a", "sha256": hash_key("secret-a")})
    ring = KeyRing(path, ["plain"])
    path.write_text("keys: [{name: a, sha256: not-a-hash}]\n")
    os.utime(path, (time.time() + 100, time.time() + 100))
    ring._checked = 0
    assert ring.lookup("secret-a") is None
    assert ring.lookup("plain") is not None
    assert "does not parse" in caplog.text
    assert "secret-a" not in caplog.text
    write_keys(path, {"name": "a", "sha256": hash_key("secret-a")})
    ring._checked = 0
    assert ring.lookup("secret-a") is not None  # fixed: in force again


def test_plain_keys_are_hashed_and_named_and_no_keys_means_open(tmp_path: Path) -> None:
    ring = KeyRing(None, ["k1", "k2"])
    key = ring.lookup("k2")
    assert key is not None
    assert (key.name, key.admin) == ("key-2", True)
    assert "k2" not in repr(key)
    assert KeyRing(None, []).open
    assert not ring.open


def test_a_request_quota_refuses_with_retry_after_and_a_token_quota_after_the_tokens() -> None:
    quotas = Quotas()  # counted in this process (the Redis path is tested with two gateways)
    key = ApiKey(name="k", sha256="0" * 64, requests_per_minute=3, tokens_per_minute=100)

    async def run() -> None:
        for _ in range(3):
            await quotas.admit(key)
        with pytest.raises(QuotaExceeded) as refused:
            await quotas.admit(key)
        assert 1 <= refused.value.retry_after <= 60
        other = ApiKey(name="t", sha256="1" * 64, tokens_per_minute=100)
        await quotas.admit(other)
        quotas.charge_tokens(other, 150)
        await quotas.close()  # the charge runs off the response's path: let it land
        with pytest.raises(QuotaExceeded, match="100 tokens per minute"):
            await quotas.admit(other)

    asyncio.run(run())


def test_admission_reserves_what_a_request_may_cost_and_the_end_settles_it() -> None:
    """Without the reservation a key could send huge prompts with max_tokens 1 while its window looked
    empty (issue 28): a token quota is checked against what admitted requests may cost."""
    quotas = Quotas()
    key = ApiKey(name="r", sha256="2" * 64, tokens_per_minute=1000)

    async def run() -> None:
        first = await quotas.admit(key, reserve=600)
        second = await quotas.admit(key, reserve=600)  # 600 used < 1000: admitted, now 1200 reserved
        with pytest.raises(QuotaExceeded, match="1000 tokens per minute"):
            await quotas.admit(key, reserve=10)
        quotas.charge_tokens(key, 50, first)  # it cost 50: 550 back
        quotas.charge_tokens(key, 40, second)
        await quotas.close()
        assert await quotas.admit(key, reserve=10)  # 90 used now
        assert (await quotas.admit(ApiKey(name="u", sha256="3" * 64), reserve=10)).tokens == 0  # no quota

    asyncio.run(run())


def test_keys_create_prints_an_entry_the_keys_file_reads_back_with_its_tenancy(tmp_path: Path) -> None:
    import argparse

    from llamafleet.cli import api_keys as keys_cli

    parser = argparse.ArgumentParser()
    keys_cli.add_arguments(parser)
    flags = [
        "--tenant",
        "analytics",
        "--weight",
        "0.5",
        "--priority",
        "sheddable",
        "--priorities",
        "standard",
    ]
    printed = keys_cli.create(parser.parse_args(["create", "batch", *flags, "--tenant-header"]))
    key = next(line.strip() for line in printed.splitlines() if line.strip().startswith("lf-"))
    entry = [line[2:] for line in printed.splitlines() if line.startswith("  ") and "lf-" not in line]
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + "\n".join(entry) + "\n")
    found = KeyRing(path, []).lookup(key)
    assert found is not None
    assert (found.team, found.weight, found.priority, found.priorities, found.tenant_header) == (
        "analytics",
        0.5,
        "sheddable",
        ("standard",),
        True,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["create", "x", "--priority", "urgent"])
