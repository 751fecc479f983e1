"""Password and token handling: hashes only are stored, secrets are shown once."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    """A salted, slow hash (werkzeug's scrypt)."""
    return generate_password_hash(password)


def check_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def new_secret(nbytes: int = 24) -> str:
    """A random secret for tokens and device passwords (URL-safe text)."""
    return secrets.token_urlsafe(nbytes)


def secret_digest(secret: str) -> str:
    """sha256 of a high-entropy random secret; enough for tokens, which are never guessable."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def digest_matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(secret_digest(secret), digest)


def new_password() -> str:
    """A first password that is easy to type from a printed sheet: 4 groups of 4."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    groups = ["".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4)]
    return "-".join(groups)
