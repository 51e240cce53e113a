"""Bearer tokens: read once from ``tokens_file``, checked the same way for gRPC calls and web requests.

Both transports share this one check (and its messages), so a token that opens a gRPC stream opens
a WebSocket stream too, and a refused one reads the same in either place.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from asr.errors import ConfigError


class Unauthenticated(Exception):
    """The caller sent no bearer token or an unknown one (gRPC UNAUTHENTICATED, HTTP 401)."""


class BearerTokens:
    """The accepted tokens; :meth:`check` compares in constant time against every one of them."""

    def __init__(self, tokens: frozenset[str]) -> None:
        if not tokens:
            raise ConfigError("no bearer tokens given; one token per line")
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: str | Path) -> BearerTokens:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tokens file {path} does not exist")
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        tokens = frozenset(line for line in lines if line and not line.startswith("#"))
        if not tokens:
            raise ConfigError(f"tokens file {path} holds no tokens; one token per line")
        return cls(tokens)

    def check_header(self, header: str) -> None:
        """Accept ``Bearer <token>`` (an ``authorization`` header or metadata value) or raise Unauthenticated."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer …'")
        self.check(token.strip())

    def check(self, token: str) -> None:
        """Accept a bare token or raise Unauthenticated."""
        if not token:
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer …'")
        # compare_digest against every token: the time taken does not reveal a matching prefix.
        if not any([hmac.compare_digest(token.encode(), known.encode()) for known in self._tokens]):
            raise Unauthenticated("invalid bearer token")
