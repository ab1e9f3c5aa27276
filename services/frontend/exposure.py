"""Where the frontend may listen: loopback always; any other address only with
authentication configured or when told it is insecure on purpose.

"Authentication configured" means the ``KADENCE_AUTH_CONFIG`` setting names the
authentication configuration (auth.py), which the frontend then enforces on every call.
"""

from __future__ import annotations

from services.common.bind import UnsafeBind, is_loopback

__all__ = ["AUTH_SETTING", "INSECURE_SETTING", "UnsafeBind", "check_bind", "is_loopback"]

AUTH_SETTING = "KADENCE_AUTH_CONFIG"
INSECURE_SETTING = "KADENCE_INSECURE"


def check_bind(host: str, *, auth_configured: bool, insecure: bool) -> None:
    """Raise ``UnsafeBind`` when the API would be reachable from elsewhere without authentication."""
    if is_loopback(host) or auth_configured or insecure:
        return
    raise UnsafeBind(
        f"refusing to serve the API on {host or 'every interface'!s} without authentication: anyone who reaches"
        f" it could read, start and terminate every namespace's workflows. Bind to 127.0.0.1, configure"
        f" {AUTH_SETTING}, or accept the risk with --insecure ({INSECURE_SETTING}=1)")
