"""Dashboard session cookies: a random session id, HttpOnly, Secure and SameSite=Strict.

The session itself lives in the store (:mod:`iotpki.core.signin`); every form carries the
session's CSRF token (double submit, compared in constant time). Passwords of dashboard users
are scrypt hashes.
"""

from __future__ import annotations

from iotpki.core.signin import Session, hash_password, verify_password

__all__ = ["COOKIE", "Session", "hash_password", "verify_password"]

COOKIE = "iotpki_session"
