"""Signed one-click unsubscribe links (RFC 8058). Pure.

A token is the subscriber's name and an HMAC-SHA256 of it under the secret from
$MONITOR_UNSUBSCRIBE_SECRET, both base64url: a changed name or a guessed token fails
the check, and the secret never leaves the process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PATH = "unsubscribe/"
CONTEXT = b"monitor unsubscribe v1\0"  # so the secret's MAC serves this purpose only


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, name: bytes) -> bytes:
    return hmac.new(secret.encode(), CONTEXT + name, hashlib.sha256).digest()


def token(secret: str, subscriber: str) -> str:
    name = subscriber.encode()
    return f"{_b64(name)}.{_b64(_mac(secret, name))}"


def verify(secret: str, value: str) -> str | None:
    """The subscriber a token was made for, or None for a forged, altered or malformed one."""
    if not secret or value.count(".") != 1:
        return None
    name_part, mac_part = value.split(".")
    try:
        name, mac = _unb64(name_part), _unb64(mac_part)
        subscriber = name.decode()
    except (binascii.Error, ValueError):
        return None
    if not name or not hmac.compare_digest(mac, _mac(secret, name)):
        return None
    return subscriber


def link(base_url: str, secret: str, subscriber: str) -> str:
    return f"{base_url}{PATH}{token(secret, subscriber)}"
