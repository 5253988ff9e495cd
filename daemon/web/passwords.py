"""Password hashes for the ward page's users: scrypt from the standard library.

A hash is one self-describing string, so that the cost can be raised later without
breaking the hashes already in a config::

    scrypt$ln=17,r=8,p=1$<salt, base64>$<key, base64>

``ln`` is log2 of scrypt's CPU/memory cost N. The default (N = 2^17, r = 8, p = 1:
128 MiB and a few tenths of a second per check) is OWASP's recommendation for scrypt.
``wardd web-password`` prints one for the config.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
DEFAULT_LOG2_N = 17  # OWASP Password Storage Cheat Sheet: N = 2^17, r = 8, p = 1
BLOCK_SIZE = 8
PARALLELISM = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_LOG2_N = 10  # tests hash with cheap parameters; below this a hash is refused as too weak
MAX_LOG2_N = 20  # 1 GiB at r = 8: more would be a mistake, and a way to exhaust memory
MAX_PASSWORD_BYTES = 1024  # a login form's field; scrypt's time does not depend on it much

_FORMAT = re.compile(
    r"scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})\$(?P<salt>[A-Za-z0-9+/]+=*)\$(?P<key>[A-Za-z0-9+/]+=*)"
)
HASH_RULE = "a hash as printed by `wardd web-password` (scrypt$ln=..,r=..,p=..$salt$key)"


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed hash: scrypt's parameters, the salt and the derived key."""

    log2_n: int
    block_size: int
    parallelism: int
    salt: bytes
    key: bytes

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        key = base64.b64encode(self.key).decode("ascii")
        return f"{SCHEME}$ln={self.log2_n},r={self.block_size},p={self.parallelism}${salt}${key}"


def parse_hash(text: str) -> PasswordHash:
    """A hash string parsed; ``ValueError`` saying what is wrong (a pydantic validator's message)."""
    found = _FORMAT.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"must be {HASH_RULE}")
    log2_n, block, parallel = int(found["ln"]), int(found["r"]), int(found["p"])
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
        raise ValueError(f"scrypt cost ln={log2_n} is outside {MIN_LOG2_N}..{MAX_LOG2_N}")
    if not 1 <= block <= 32 or not 1 <= parallel <= 16:
        raise ValueError("scrypt r must be 1..32 and p 1..16")
    try:
        salt = base64.b64decode(found["salt"], validate=True)
        key = base64.b64decode(found["key"], validate=True)
    except ValueError as exc:
        raise ValueError(f"must be {HASH_RULE}: bad base64") from exc
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("the salt or the key is too short")
    return PasswordHash(log2_n, block, parallel, salt, key)


def checked_hash(text: str) -> str:
    """``text`` if it parses as a hash (a pydantic validator)."""
    parse_hash(text)
    return text.strip()


def _derive(
    password: str, salt: bytes, *, log2_n: int, block_size: int, parallelism: int, size: int
) -> bytes:
    n = 1 << log2_n
    # scrypt needs 128 * r * N bytes; OpenSSL refuses beyond maxmem (32 MiB by default).
    maxmem = 128 * block_size * n * parallelism + 16 * 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=block_size, p=parallelism, maxmem=maxmem, dklen=size
    )


def hash_password(password: str, *, log2_n: int = DEFAULT_LOG2_N) -> str:
    """A new hash of ``password`` with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(
        password, salt, log2_n=log2_n, block_size=BLOCK_SIZE, parallelism=PARALLELISM, size=KEY_BYTES
    )
    return str(PasswordHash(log2_n, BLOCK_SIZE, PARALLELISM, salt, key))


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison of the keys)."""
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    key = _derive(
        password,
        stored.salt,
        log2_n=stored.log2_n,
        block_size=stored.block_size,
        parallelism=stored.parallelism,
        size=len(stored.key),
    )
    return hmac.compare_digest(key, stored.key)
