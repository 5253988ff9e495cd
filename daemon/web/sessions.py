"""Logins of the ward page: server-side sessions that expire, each with its CSRF token.

The browser holds only a random token (an HttpOnly, SameSite=Strict cookie); the
daemon keeps its SHA-256, so that a copy of the store gives no live session. A
session lasts ``session_ttl_s`` from the login on the daemon's clock (injected),
whatever the activity: a ward station's login ends with the shift. Sessions are
kept in the store (``web.sessions`` in its meta), so that a restart of the daemon
does not log everyone out; a user no longer in the config loses its sessions then.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.clock import Clock
from daemon.timefmt import iso, parse_iso

TOKEN_BYTES = 32  # 256 bits, URL-safe base64 in the cookie


def new_token() -> str:
    """A random token for a cookie or a form."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """One login: who, its CSRF token, and when it ends (daemon time)."""

    user: str
    csrf: str
    expires_at: datetime


class Sessions:
    """The open sessions, by the digest of their token."""

    def __init__(self, ttl_s: float, clock: Clock) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._by_digest: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self, user: str) -> tuple[str, Session]:
        """A new session for ``user``: the token for its cookie, and the session."""
        self._expire()
        token = new_token()
        session = Session(user, new_token(), self._clock.now() + self._ttl)
        self._by_digest[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie's token, if any (an expired one is forgotten)."""
        if not token:
            return None
        key = _digest(token)
        session = self._by_digest.get(key)
        if session is None:
            return None
        if self._clock.now() >= session.expires_at:
            del self._by_digest[key]
            return None
        return session

    def drop(self, token: str | None) -> bool:
        """End the session of ``token`` (logging out); whether there was one."""
        return bool(token) and self._by_digest.pop(_digest(token or ""), None) is not None

    def dump(self) -> dict[str, Any]:
        """The live sessions as JSON-compatible data (digests only, never a token)."""
        self._expire()
        return {
            key: {"user": s.user, "csrf": s.csrf, "expires_at": iso(s.expires_at)}
            for key, s in self._by_digest.items()
        }

    def load(self, data: Mapping[str, Any], users: Collection[str]) -> int:
        """Put back what ``dump`` gave, for the ``users`` that still exist; how many."""
        now = self._clock.now()
        for key, item in data.items():
            try:
                session = Session(str(item["user"]), str(item["csrf"]), parse_iso(item["expires_at"]))
            except (KeyError, TypeError, ValueError):
                continue  # only a hand edit makes an unreadable one: it is not a login
            if session.user in users and session.expires_at > now:
                self._by_digest[str(key)] = session
        return len(self._by_digest)

    def _expire(self) -> None:
        now = self._clock.now()
        for key in [k for k, s in self._by_digest.items() if now >= s.expires_at]:
            del self._by_digest[key]
