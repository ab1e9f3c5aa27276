"""Where the frontend may listen: loopback always; any other address only with
authentication configured or when told it is insecure on purpose.

"Authentication configured" means the ``KADENCE_AUTH_CONFIG`` setting names the
authentication configuration (auth.py), which the frontend then enforces on every call.
"""

from __future__ import annotations

import ipaddress
import socket

AUTH_SETTING = "KADENCE_AUTH_CONFIG"
INSECURE_SETTING = "KADENCE_INSECURE"


class UnsafeBind(Exception):
    """The frontend was asked to listen beyond this machine without authentication."""


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


def check_bind(host: str, *, auth_configured: bool, insecure: bool) -> None:
    """Raise ``UnsafeBind`` when the API would be reachable from elsewhere without authentication."""
    if is_loopback(host) or auth_configured or insecure:
        return
    raise UnsafeBind(
        f"refusing to serve the API on {host or 'every interface'!s} without authentication: anyone who reaches"
        f" it could read, start and terminate every namespace's workflows. Bind to 127.0.0.1, configure"
        f" {AUTH_SETTING}, or accept the risk with --insecure ({INSECURE_SETTING}=1)")
