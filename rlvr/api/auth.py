"""Who is calling: bearer tokens mapped to a user and a role.

Two sources, both optional:

- ``RLVR_API_TOKEN``: one token, the user ``admin`` with role ``admin`` (the single-token
  setup keeps working unchanged);
- ``RLVR_TOKENS_FILE``: a YAML or JSON mapping ``token -> {user, role}``::

      s3cret-alice: {user: alice, role: user}
      s3cret-ops:   {user: ops,   role: admin}

``admin`` sees and acts on every job; ``user`` only on the jobs it submitted (others are
404 to it) and is held to the per-user quotas. With no token at all the service is open and
every caller is the admin (allowed on a loopback bind only: ``rlvr serve`` refuses otherwise).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from rlvr.api.settings import Settings

Role = Literal["admin", "user"]
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role

    @property
    def admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS_ADMIN = Principal("admin", "admin")


class TokenTable:
    """Bearer token -> :class:`Principal`; empty means no auth (every caller is the admin)."""

    def __init__(self, tokens: dict[str, Principal]):
        self._tokens = [(t.encode(), p) for t, p in tokens.items()]

    @property
    def open(self) -> bool:
        return not self._tokens

    def lookup(self, token: str) -> Principal | None:
        """The token's principal; compares against every token in constant time each."""
        given, found = token.encode(), None
        for known, principal in self._tokens:
            if secrets.compare_digest(given, known):
                found = principal
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        tokens: dict[str, Principal] = {}
        if settings.tokens_file is not None:
            tokens.update(read_tokens_file(Path(settings.tokens_file).expanduser()))
        if settings.api_token:
            tokens[settings.api_token] = ANONYMOUS_ADMIN
        return cls(tokens)


def read_tokens_file(path: Path) -> dict[str, Principal]:
    """Parse a tokens file; ``ValueError`` naming the entry and the fix for a bad one."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"RLVR_TOKENS_FILE {path}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"RLVR_TOKENS_FILE {path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"RLVR_TOKENS_FILE {path}: must map token -> {{user, role}}")
    out: dict[str, Principal] = {}
    for i, (token, entry) in enumerate(data.items()):
        where = f"RLVR_TOKENS_FILE {path}, entry {i + 1}"
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError(f"{where}: a token must be a string of at least 16 characters")
        if not isinstance(entry, dict) or set(entry) - {"user", "role"}:
            raise ValueError(f"{where}: the value must be {{user: NAME, role: admin|user}}")
        user, role = entry.get("user"), entry.get("role", "user")
        if not isinstance(user, str) or not _USER_RE.fullmatch(user):
            raise ValueError(f"{where}: user must be 1-64 letters, digits, '.', '_', '@', '-'")
        if role not in ("admin", "user"):
            raise ValueError(f"{where}: role must be 'admin' or 'user', got {role!r}")
        out[token] = Principal(user, role)
    return out
