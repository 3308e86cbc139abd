"""Analysts' logins: a users file of scrypt password hashes, server-side sessions, and CSRF tokens.

The users file has one line per analyst, ``name:scrypt:N:r:p:salt-hex:hash-hex``, written by
``python -m pipeline console add-user NAME --users FILE`` (the password is read from the terminal or
stdin, never from the command line). The analyst's name is the ``analyst`` of every verdict they give.

A login makes a session: a random token in a cookie (HttpOnly, SameSite=Strict, Secure when served over
TLS), kept in the server's memory (a restart logs everyone out) with its own CSRF token, which every form
carries and every POST must echo. The login form itself is protected by a double-submit token, and five
wrong passwords for a name within five minutes stop that name signing in for the rest of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_SECONDS = 8 * 3600
MIN_PASSWORD = 10
MAX_FAILURES, FAILURE_WINDOW = 5, 300.0


class AuthError(ValueError):
    """A user name or password that cannot be used, or a users file that cannot be read."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{salt.hex()}:{digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split(":")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)))
    except ValueError:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def read_users(path: Path) -> dict[str, str]:
    """name → stored hash; raises :class:`AuthError` on a line that is not a user."""
    users: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthError(f"cannot read the users file {path}: {exc.strerror}") from exc
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, stored = line.partition(":")
        if not NAME.match(name) or not stored.startswith("scrypt:"):
            raise AuthError(f"{path}:{n}: expected name:scrypt:N:r:p:salt:hash")
        users[name] = stored
    return users


def add_user(path: Path, name: str, password: str) -> bool:
    """Add or replace a user in the users file (created with mode 0600); True when it was new."""
    if not NAME.match(name):
        raise AuthError("a user name is 1..64 letters, digits, '_', '.', '@' or '-'")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password has at least {MIN_PASSWORD} characters")
    users = read_users(path) if path.exists() else {}
    new = name not in users
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text("".join(f"{u}:{h}\n" for u, h in sorted(users.items())), encoding="utf-8")
    tmp.replace(path)
    return new


@dataclass
class Session:
    user: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Live sessions by token, in memory."""

    users_file: Path
    ttl: float = SESSION_SECONDS
    _by_token: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def login(self, name: str, password: str) -> str | None:
        """A new session token for a right name and password, else None (same work either way). After
        ``MAX_FAILURES`` wrong passwords for a name within ``FAILURE_WINDOW`` seconds, that name cannot
        sign in until the window has passed (guessing is slowed; the rightful user waits a few minutes)."""
        now = time.time()
        recent = [t for t in self._failures.get(name[:64], []) if t > now - FAILURE_WINDOW]
        users = read_users(self.users_file)
        stored = users.get(name, hash_password("not-a-user", b"0" * 16))
        ok = check_password(password, stored) and name in users and len(recent) < MAX_FAILURES
        if not ok:
            self._failures[name[:64]] = [*recent, now][-MAX_FAILURES:]
            if len(self._failures) > 10_000:  # bounded: the oldest names go
                self._failures.pop(next(iter(self._failures)))
            return None
        self._failures.pop(name, None)
        token = secrets.token_urlsafe(32)
        self._by_token[_key(token)] = Session(name, secrets.token_urlsafe(32), time.time() + self.ttl)
        return token

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(_key(token))
        if session is None or session.expires < time.time():
            self._by_token.pop(_key(token), None)
            return None
        return session

    def logout(self, token: str | None) -> None:
        if token:
            self._by_token.pop(_key(token), None)


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens, neither empty."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())
