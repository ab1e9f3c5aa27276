"""Reading the JSON policy files of the services: the authentication configuration
(``KADENCE_AUTH_CONFIG``, services/frontend/auth.py) and the ingress policy
(``KADENCE_INGRESS_KEYS``, services/common/ingress_auth.py).

Both are read once at start-up and refused whole with a message naming the file and the
field; each module keeps its own error class (the services refuse to start on it) and its
own fields, and shares these checks of the shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read(path: Path, error: type[ValueError], what: str) -> object:
    """The JSON value in ``path``; ``error("cannot read the <what>: ...")`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read the {what}: {exc}") from None


def json_object(data: object, where: str, error: type[ValueError]) -> dict[str, Any]:
    """``data`` when it is a JSON object, else ``error("<where>: must be a JSON object")``."""
    if not isinstance(data, dict):
        raise error(f"{where}: must be a JSON object")
    return data


def is_string_list(value: object, *, min_chars: int = 0, non_empty: bool = False) -> bool:
    """Whether ``value`` is a list of strings (each of ``min_chars`` or more; not empty if asked)."""
    return (isinstance(value, list) and (bool(value) or not non_empty)
            and all(isinstance(v, str) and len(v) >= min_chars for v in value))
