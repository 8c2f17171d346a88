"""API keys: stored as SHA-256 hashes, each with a name, the models it may use and its quotas.

The keys file (``--gateway-keys-file``, a Kubernetes Secret mounted as a file) is re-read when it
changes, so adding, revoking or re-scoping a key needs no restart. A file that does not parse fails
closed: none of its keys is accepted until it does (a revocation with a typo must not leave a leaked
key working), and the log says why. Keys are random (``llamafleet keys create``),
so one fast hash is enough: there is nothing to guess from it.

    keys:
      - name: team-search                 # in metrics and logs (never the key)
        sha256: 9f86d08…                   # of the key
        models: ["qwen-7b", "qwen-7b:*"]   # shell patterns over model names (base:adapter too)
        admin: false                       # /v1/admin/* and /v1/replicas/* (load adapters, slots)
        requestsPerMinute: 600             # 0 or absent: no limit
        tokensPerMinute: 200000
        tenant: search                     # whose turn it is in a busy model's queue (default: name)
        weight: 2                          # its share of turns against other tenants (default 1)
        priority: standard                 # its requests' priority: critical, standard, sheddable
        priorities: [sheddable]            # others a request may ask for (x-llamafleet-priority)
        tenantHeader: false                # true: a trusted upstream names the tenant (x-llamafleet-tenant)
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import secrets
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlplane.gateway.balancer.fair_queue import ANONYMOUS_TENANT, Priority
from llamafleet.core.errors import Forbidden

log = logging.getLogger(__name__)

KEY_PREFIX = "lf-"
RELOAD_CHECK_S = 1.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    models: tuple[str, ...] = ("*",)
    admin: bool = False
    requests_per_minute: int = Field(default=0, ge=0, alias="requestsPerMinute")
    tokens_per_minute: int = Field(default=0, ge=0, alias="tokensPerMinute")
    tenant: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})?$")
    weight: float = Field(default=1.0, gt=0, le=1000)
    priority: Priority = "standard"
    priorities: tuple[Priority, ...] = ()
    tenant_header: bool = Field(default=False, alias="tenantHeader")

    @property
    def team(self) -> str:
        """The tenant its requests wait as: ``tenant``, else the key's name."""
        return self.tenant or self.name

    def may_use(self, model: str) -> bool:
        """``model`` as clients name it, ``base`` or ``base:adapter`` (pattern ``base``: the base only)."""
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def require(self, model: str) -> None:
        if not self.may_use(model):
            raise Forbidden(f"API key {self.name!r} may not use model {model!r}")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)


# No keys configured: every caller may use every model; only a caller on this machine, talking to it by
# a loopback name and not from a web page of another origin, may call the admin routes (the guard).
# Without keys every caller is trusted alike: the tenant and priority headers are honoured.
_OPEN = {
    "tenant": ANONYMOUS_TENANT,
    "tenant_header": True,
    "priorities": ("critical", "standard", "sheddable"),
}
ANONYMOUS = ApiKey(name="anonymous", sha256="0" * 64, admin=False, **_OPEN)
LOCAL_ANONYMOUS = ApiKey(name="anonymous", sha256="0" * 64, admin=True, **_OPEN)


def request_key(state: object) -> ApiKey:
    """The key the access guard left on ``request.state`` (anonymous when none was checked)."""
    key = getattr(state, "api_key", None)
    return key if isinstance(key, ApiKey) else ANONYMOUS


class KeyRing:
    """The keys in force: from the keys file (re-read on change) and from plain ``--gateway-api-keys``
    (full access, named key-1, key-2, … and hashed at once)."""

    def __init__(self, keys_file: Path | None, plain: list[str]) -> None:
        self._file = keys_file
        self._plain = {
            hash_key(k): ApiKey(name=f"key-{i}", sha256=hash_key(k), admin=True)
            for i, k in enumerate(plain, 1)
        }
        self._from_file: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        if keys_file is not None:
            self._reload(initial=True)

    @property
    def open(self) -> bool:
        """No key configured anywhere: every caller is trusted (the localhost default)."""
        return self._file is None and not self._plain

    def lookup(self, token: str) -> ApiKey | None:
        if self._file is not None and time.monotonic() - self._checked > RELOAD_CHECK_S:
            self._reload()
        digest = hash_key(token)
        return self._plain.get(digest) or self._from_file.get(digest)

    def _reload(self, initial: bool = False) -> None:
        assert self._file is not None
        self._checked = time.monotonic()
        try:
            info = self._file.stat()
            stamp = (info.st_mtime_ns, info.st_ino)
        except OSError as exc:
            if initial:
                raise OSError(f"keys file {self._file}: {exc.strerror}") from None
            return
        if stamp == self._stamp:
            return
        try:
            parsed = KeysFile.model_validate(yaml.safe_load(self._file.read_text()) or {})
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            problem = str(exc).splitlines()[0] if not isinstance(exc, ValidationError) else _first_error(exc)
            if initial:
                raise OSError(f"keys file {self._file}: {problem}") from None
            log.error("keys file %s does not parse (%s): no key from it is accepted until it does",
                      self._file, problem)  # fmt: skip
            self._from_file = {}
            self._stamp = stamp
            return
        names = [k.name for k in parsed.keys]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            log.error("keys file %s: key name %r appears twice: no key from it is accepted until it is fixed",
                      self._file, duplicate)  # fmt: skip
            self._from_file = {}
            self._stamp = stamp
            return
        self._from_file = {k.sha256: k for k in parsed.keys}
        self._stamp = stamp
        log.info("keys file %s: %d key(s) in force (%s)", self._file, len(names), ", ".join(names) or "none")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}"
