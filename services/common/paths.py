"""Where the server keeps its local state on this machine (``kadence dev``'s data, the
stream processors' tables)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["state_dir"]


def state_dir() -> Path:
    """``$KADENCE_HOME``, else ``$XDG_STATE_HOME/kadence`` (default ``~/.local/state/kadence``)."""
    base = os.environ.get("KADENCE_HOME") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "kadence")
    return Path(base)
