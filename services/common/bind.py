"""Whether a listening address is reachable from other machines (the frontend, matching's
internal API and the metrics endpoint refuse such a bind without authentication)."""

from __future__ import annotations

import ipaddress
import socket


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
