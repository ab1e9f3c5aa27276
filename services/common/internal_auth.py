"""The shared key of the internal endpoints: matching's HTTP API and the metrics endpoint.

Both listen on 127.0.0.1 unless configured. With ``KADENCE_INTERNAL_KEY`` set, every
request to them must carry ``Authorization: Bearer <key>`` (the frontend's matching client
sends it; point Prometheus's scrape ``authorization`` at it); otherwise 401. Without a key,
a bind beyond loopback is refused unless ``KADENCE_INSECURE=1``: anyone reaching
matching's API could take tasks (with their inputs) and answer queries.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from .bind import UnsafeBind, is_loopback

SETTING = "KADENCE_INTERNAL_KEY"
INSECURE_SETTING = "KADENCE_INSECURE"
MIN_KEY_CHARS = 16


def check_key(key: str) -> None:
    if key and len(key) < MIN_KEY_CHARS:
        raise ValueError(f"{SETTING} must have at least {MIN_KEY_CHARS} characters")
    # A space or newline at an end (a key read from a file) is dropped from the header on the
    # way or refused by the client: every internal call would then fail, 401 or not sent.
    if any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ValueError(f"{SETTING} must be printable ASCII without spaces or line breaks"
                         " (a trailing newline from a file is a common cause)")


def check_bind(what: str, host: str, *, key: str, insecure: bool) -> None:
    """``UnsafeBind`` when ``what`` would listen beyond this machine without the key."""
    check_key(key)
    if key or insecure or is_loopback(host):
        return
    raise UnsafeBind(f"refusing to serve {what} on {host or 'every interface'} without {SETTING}: anyone who"
                     f" reaches it could use it. Set {SETTING} (shared by the services), bind to 127.0.0.1, or"
                     f" accept the risk with {INSECURE_SETTING}=1")


def headers(key: str) -> dict[str, str]:
    """What a caller of an internal endpoint sends."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _valid(authorization: str | None, key: str) -> bool:
    expected = f"Bearer {key}".encode()
    return authorization is not None and hmac.compare_digest(authorization.encode(), expected)


def middleware(key: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware answering 401 to a request without the key."""

    @web.middleware
    async def require_key(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not _valid(request.headers.get("Authorization"), key):
            return web.json_response({"error": "Unauthenticated",
                                      "message": f"this internal endpoint needs Authorization: Bearer <{SETTING}>"},
                                     status=401)
        return await handler(request)

    return require_key


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_guard(app: WsgiApp, key: str) -> WsgiApp:
    """``app`` (the Prometheus endpoint) behind the key."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not _valid(environ.get("HTTP_AUTHORIZATION"), key):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", "Bearer")])
            return [f"this endpoint needs Authorization: Bearer <{SETTING}>\n".encode()]
        return app(environ, start_response)

    return guarded


def from_env() -> tuple[str, bool]:
    """The key and the insecure flag from the environment."""
    insecure = os.environ.get(INSECURE_SETTING, "").strip().lower() not in ("", "0", "false", "no")
    return os.environ.get(SETTING, ""), insecure
