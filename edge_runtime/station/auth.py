"""Who may use the station: anyone on the machine itself; off loopback, only holders of the token.

The token comes from a file (so it survives restarts and can be handed out once) or is generated at
start and printed with the URL to open. A browser presents it once in the URL; the station then sets
it as an HttpOnly, SameSite=Strict cookie, so the page's own requests carry it and no other site's can.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path

from ..errors import EdgecxrError

COOKIE = "edgecxr_token"
QUERY = "token"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(path: Path | None) -> str:
    """The token in `path` (first line), else a new random one (192 bits)."""
    if path is None:
        return secrets.token_urlsafe(24)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgecxrError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise EdgecxrError(f"the token in {path} must be one line of at least {MIN_TOKEN_LENGTH} characters "
                           f"without spaces")
    return token


def token_matches(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())
