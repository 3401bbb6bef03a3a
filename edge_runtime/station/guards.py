"""Who may send what: cross-site requests, requests through a proxy, and the token's places.

A browser on the clinic PC also visits the rest of the web, and any page it opens can send a POST to
127.0.0.1. A state-changing request therefore needs a CSRF token that only the station's own page can
read (GET /api/session, same-origin; a foreign Host is already refused, so DNS rebinding cannot read it
either), and its Origin and Sec-Fetch-Site, when the browser sends them, must say it came from the
station's own page. A client holding the access token as a Bearer header is not a browser being misused
(no browser attaches that header to a cross-site request) and needs no CSRF token.

Behind a reverse proxy every request arrives from 127.0.0.1 with a loopback Host: loopback then proves
nothing, so a request that carries a forwarding header is refused unless the station requires the token.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from . import auth

CSRF_HEADER = "x-edgecxr-csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SAME_SITE = ("same-origin", "none")  # "none": typed in the address bar or a bookmark
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "via")


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def forwarded(headers) -> bool:
    return any(name in headers for name in FORWARDING_HEADERS)


def cross_site_reason(method: str, headers, csrf: str, bearer: bool) -> str | None:
    """Why a request must be refused as cross-site (None when it may go on)."""
    if method in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
        return "cross-site request refused (its Origin is not this station)"
    if origin == "null":
        return "cross-site request refused (opaque Origin)"
    if bearer:
        return None
    if not auth.token_matches(csrf, headers.get(CSRF_HEADER)):
        return "missing or wrong CSRF token: reload the station's page"
    return None
