"""Accounts and sessions: argon2 password hashes, signed session cookies, CSRF tokens.

The session cookie (Starlette's SessionMiddleware: itsdangerous-signed, HttpOnly, SameSite=Lax)
holds the user id, a hash-derived stamp and a random CSRF token. Every POST must echo the token
in a form field or an X-CSRF-Token header; changing a password invalidates old sessions (stamp).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from prodcat.desk.db import ROLES, Database, User

_hasher = PasswordHasher()
MIN_PASSWORD = 8


class AuthError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def add_user(db: Database, name: str, password: str, role: str = "reviewer") -> User:
    """Create an account, or reset the password and role of an existing one."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AuthError(f"user name {name!r}: expected 1 to 100 characters")
    if role not in ROLES:
        raise AuthError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password for {name!r}: expected at least {MIN_PASSWORD} characters")
    with db.session() as s, s.begin():
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name, password_hash=hash_password(password), role=role)
            s.add(user)
        else:
            user.password_hash, user.role = hash_password(password), role
    return user


def authenticate(db: Database, name: str, password: str) -> User | None:
    with db.session() as s:
        user = s.scalar(select(User).where(User.name == name.strip()))
    if user is None:
        _hasher.hash(password)  # same work either way: no timing hint that the name exists
        return None
    return user if verify_password(user.password_hash, password) else None


def stamp(user: User) -> str:
    """Changes when the password does, so old cookies stop working."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def csrf_token(session: dict[str, Any]) -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def csrf_ok(session: dict[str, Any], sent: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and sent and hmac.compare_digest(str(expected), sent))
