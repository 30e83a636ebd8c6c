"""The server's secret: one value from settings or generated once into the data dir, with purpose-bound subkeys."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from aiohttp import web

from talk.settings import Settings

SECRET_KEY = web.AppKey("secret", bytes)
SECRET_FILE = "secret.key"


def load_secret(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not overwrite each other's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def subkey(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose, so a leak of one (say, a visitor token scheme) says nothing about another."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
