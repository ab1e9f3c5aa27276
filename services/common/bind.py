"""Whether a listening address is reachable from other machines (the frontend, matching's
internal API and the metrics endpoint refuse such a bind without authentication), and the
start of an internal HTTP server with the address others reach it at."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp import web

from services.common.config import LISTEN_BACKLOG


class UnsafeBind(Exception):
    """A service was asked to listen beyond this machine without authentication."""


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (``""`` means every interface)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False  # unresolvable: the bind will fail anyway; do not call it safe
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


async def serve(app: web.Application, host: str, port: int, **runner: Any) -> tuple[web.AppRunner, str]:
    """Start ``app`` on ``host``:``port`` (0: a free port); return its runner and its URL as
    other processes reach it (by host name when it listens on every interface)."""
    app_runner = web.AppRunner(app, access_log=None, **runner)
    await app_runner.setup()
    await web.TCPSite(app_runner, host, port, backlog=LISTEN_BACKLOG).start()
    bound_host, bound_port = app_runner.addresses[0][:2]
    if bound_host in ("0.0.0.0", "::"):
        bound_host = socket.gethostname()
    return app_runner, f"http://{bound_host}:{bound_port}"
