"""docker-compose.yml publishes every port on the host's loopback only (the API and Jaeger
have no authentication)."""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_every_published_port_is_bound_to_loopback() -> None:
    text = COMPOSE.read_text()
    published = [p for line in re.findall(r"^\s*ports:\s*\[(.*)\]", text, flags=re.MULTILINE)
                 for p in re.findall(r'"([^"]+)"', line)]
    assert published, "no ports found: the test no longer reads the file's layout"
    assert not re.search(r"^\s*ports:\s*$", text, flags=re.MULTILINE), "block-style ports: extend this test"
    for mapping in published:
        assert mapping.startswith("127.0.0.1:"), mapping
