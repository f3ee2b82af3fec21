"""Who may call the HTTP API: bearer tokens, and links signed by the API itself.

Tokens come from ``MEDIA_PIPELINE_API_TOKENS`` (comma-separated, several valid at once for
rotation). The API's own upload and download links (local storage) carry an expiry and an
HMAC-SHA256 signature over what they are bound to, keyed by
``MEDIA_PIPELINE_UPLOAD_SECRET``. Left empty, each is made once (random, 256 bits) and kept
in the data directory with mode 0600, so the embedded default is never open to anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from media_pipeline.kept_secrets import kept_secret, token_file
from media_pipeline.settings import Settings


def api_tokens(settings: Settings) -> list[str]:
    return settings.api.tokens() or [kept_secret(token_file(settings))]


def token_allowed(header: str | None, tokens: list[str]) -> bool:
    """Whether an ``Authorization: Bearer ...`` header names one of ``tokens``."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    given_bytes = given.strip().encode()
    # Every token compared, in constant time each: no early exit that times the match.
    return sum(hmac.compare_digest(given_bytes, t.encode()) for t in tokens) > 0


class LinkSigner:
    """Signs and checks ``(purpose, parts..., expires)``; a link bound to one media, size
    and type verifies for nothing else."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.api.upload_secret.get_secret_value() or kept_secret(
            settings.storage.data_dir / "upload-secret"
        )
        self._key = hashlib.sha256(secret.encode()).digest()

    def sign(self, purpose: str, *parts: object, expires: int) -> str:
        message = "\n".join([purpose, *map(str, parts), str(expires)]).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def expiry(self, ttl: int) -> int:
        return int(time.time()) + ttl

    def check(self, signature: str, purpose: str, *parts: object, expires: int) -> str | None:
        """None when valid; else why not (``invalid`` or ``expired``)."""
        expected = self.sign(purpose, *parts, expires=expires).encode()
        if not hmac.compare_digest(signature.encode(errors="replace"), expected):
            return "invalid"  # bytes compared: a non-ASCII signature is just wrong
        if expires < time.time():
            return "expired"
        return None
