"""Who is calling: principals from the bearer tokens, and the holder each request acts as.

A *holder* is the consumer name a task's lease belongs to: only the holder may ack, fail,
extend or checkpoint it, and when a holder's session ends its tasks go back at once.

* stdio (and in-memory clients): one holder per process, the process's consumer name
  (``MCP_QUEUE_CONSUMER``), as before.
* HTTP on the protocol revisions with sessions (up to 2025-11-25: a Streamable HTTP session,
  or an SSE connection): each MCP session is a holder of its own,
  ``<consumer>/<principal>/<sid>``, where ``sid`` is the first 12 hex digits of the SHA-256
  of the session id (the id itself never shows: it would let a reader of ``get_task`` or the
  stats join the session). The session's tasks go back to the queue, not charged as an
  attempt, when it ends: DELETE, the SSE stream closed, or :data:`SESSION_IDLE_TIMEOUT_S`
  without any request or open stream.
* HTTP on the stateless revision (2026-07-28, no sessions): the holder is the request's
  principal, ``<principal>/<name>``; ``name`` is the request's ``_meta`` key
  :data:`HOLDER_META_KEY` (1-64 of ``A-Z a-z 0-9 _ . -``), else ``default``. It spans
  requests and server processes, so its tasks stay leased until acked, failed or the lease
  ends.

The principal is the tokens file's name for the request's token (``MCP_QUEUE_AUTH_TOKENS_FILE``),
``bearer`` for ``MCP_QUEUE_AUTH_TOKEN`` and ``anonymous`` without a token. No part of a holder
name contains ``/`` (each matches ``NAME_PATTERN``), so the three shapes (1, 3 and 2 parts)
never collide: no request can act as another's holder.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from mcp_queue_server.limits import NAME_PATTERN
from mcp_queue_server.observe.http import token_matches
from mcp_queue_server.settings import Role, Settings

#: The request ``_meta`` key naming a stateless (2026-07-28) client's holder within its principal.
HOLDER_META_KEY = "io.github.mcp-queue-server/holder"
#: The stateless holder's name when the request names none.
DEFAULT_HOLDER = "default"
#: The principal of ``MCP_QUEUE_AUTH_TOKEN``.
BEARER = "bearer"
#: The principal of a request without a token (no token configured): reserved in the tokens file.
ANONYMOUS = "anonymous"
#: Shortest token the tokens file accepts.
MIN_TOKEN_LENGTH = 16
#: A Streamable HTTP session without any request in flight or open stream this long ends (the
#: SDK's own default, stated here): its tasks go back to the queue.
SESSION_IDLE_TIMEOUT_S = 30 * 60.0
#: Hex digits of a session id's SHA-256 in its holder name (48 bits).
SID_DIGITS = 12

_NAME = re.compile(NAME_PATTERN)


class TokensFileError(Exception):
    """The auth tokens setup cannot be used; the message (one line, no secret) says what to fix."""


@dataclass(frozen=True)
class Principal:
    """A named caller and the role whose tools it may use."""

    name: str
    role: Role


def load_principals(settings: Settings) -> dict[str, Principal]:
    """The configured tokens, each with its principal (empty: no token, HTTP is open).

    Raises:
        TokensFileError: both token settings are set, or the tokens file is unreadable,
            open to group or others, or malformed.
    """
    path = settings.auth_tokens_file
    if path is not None and settings.auth_token is not None:
        raise TokensFileError(
            "set MCP_QUEUE_AUTH_TOKEN or MCP_QUEUE_AUTH_TOKENS_FILE, not both: "
            f'move the single token into {path} as {{"{BEARER}": {{"token": ..., "role": ...}}}}'
        )
    if path is not None:
        return read_tokens_file(path)
    if settings.auth_token is not None:
        return {settings.auth_token.get_secret_value(): Principal(BEARER, settings.role)}
    return {}


def read_tokens_file(path: Path) -> dict[str, Principal]:
    """``{token: principal}`` from the JSON file at ``path`` (see the module docstring).

    Raises:
        TokensFileError: what is wrong, naming the file (never a token).
    """
    where = f"auth tokens file {path}"
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise TokensFileError(f"cannot read the {where}: {reason}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokensFileError(
            f"the {where} is open to group or others (mode {stat.filemode(mode)}): run chmod 600 {path}"
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise TokensFileError(f"the {where} is not valid JSON") from None
    if not isinstance(data, dict) or not data:
        raise TokensFileError(f'the {where} must be a JSON object {{"<principal>": {{"token": ..., "role": ...}}}}')
    roles = ", ".join(r.value for r in Role)
    found: dict[str, Principal] = {}
    for name, entry in data.items():
        if not _NAME.fullmatch(name) or name == ANONYMOUS:
            raise TokensFileError(
                f"the {where} names a principal {name[:64]!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
                f"(not {ANONYMOUS!r})"
            )
        if not isinstance(entry, dict) or set(entry) != {"token", "role"}:
            raise TokensFileError(f'the {where}: principal {name} needs exactly "token" and "role"')
        token, role = entry["token"], entry["role"]
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise TokensFileError(f"the {where}: the token of {name} must be at least {MIN_TOKEN_LENGTH} characters")
        if role not in {r.value for r in Role}:
            raise TokensFileError(f"the {where}: the role of {name} must be one of {roles}")
        if any(token_matches(token, other) for other in found):
            raise TokensFileError(f"the {where}: {name} has the token of another principal; tokens must be unique")
        found[token] = Principal(name, Role(role))
    return found


class PrincipalTokenVerifier:
    """The SDK's ``TokenVerifier`` over named tokens: the access token's ``client_id`` is the
    principal's name. Every token is compared, in constant time, whichever matches."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self._tokens = list(tokens.items())

    async def verify_token(self, token: str) -> AccessToken | None:
        match: Principal | None = None
        for secret, principal in self._tokens:
            if token_matches(token, secret) and match is None:
                match = principal
        return None if match is None else AccessToken(token="", client_id=match.name, scopes=[])


class Principals:
    """The principals of a server by name, and the role each request acts with."""

    def __init__(self, settings: Settings, tokens: Mapping[str, Principal]) -> None:
        self.server_role = settings.role
        self.by_name = {p.name: p for p in tokens.values()}

    def role_of(self, principal: str | None) -> Role:
        """The role of a request by ``principal`` (None or unknown: the server's role)."""
        found = self.by_name.get(principal or "")
        return self.server_role if found is None else found.role


def principal_of(request: Any) -> str | None:
    """The principal an HTTP request authenticated as (None: no token needed, or not HTTP)."""
    scope = getattr(request, "scope", None)
    user = scope.get("user") if isinstance(scope, dict) else None
    return user.access_token.client_id if isinstance(user, AuthenticatedUser) else None


def session_holder(consumer: str, principal: str | None, session_id: str) -> str:
    """The holder of one MCP session of this process."""
    sid = hashlib.sha256(session_id.encode()).hexdigest()[:SID_DIGITS]
    return f"{consumer}/{principal or ANONYMOUS}/{sid}"


def stateless_holder(principal: str | None, meta: object) -> str:
    """The holder of a stateless request: its principal, and the name its ``_meta`` gives.

    Raises:
        ValueError: the ``_meta`` name is not 1-64 of ``A-Z a-z 0-9 _ . -`` (the message says so).
    """
    name = meta.get(HOLDER_META_KEY, DEFAULT_HOLDER) if isinstance(meta, Mapping) else DEFAULT_HOLDER
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"_meta[{HOLDER_META_KEY!r}] must name the holder with 1-64 characters from A-Z a-z 0-9 _ . -")
    return f"{principal or ANONYMOUS}/{name}"
