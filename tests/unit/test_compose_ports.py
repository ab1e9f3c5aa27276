"""docker-compose.yml publishes every port on the host's loopback only (Jaeger has no
authentication) and runs the services with authentication on."""

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


def test_compose_runs_with_auth_and_the_internal_key() -> None:
    """The API has authentication on with the documented dev key; matching and the metrics,
    which listen beyond loopback there, have the internal key (they refuse to start without)."""
    import json

    from services.frontend.auth import Authenticator

    text = COMPOSE.read_text()
    assert "KADENCE_INSECURE" not in text
    assert "KADENCE_INTERNAL_KEY: compose-dev-only-internal-key" in text
    assert "KADENCE_AUTH_CONFIG: /etc/kadence/auth.json" in text
    auth = Authenticator.from_mapping(json.loads((COMPOSE.parent / "infra" / "compose-auth.json").read_text()))
    assert auth.check("Bearer compose-dev-only-api-key", "start", "default").name == "compose-dev"


def test_every_internal_api_listens_where_the_other_containers_reach_it() -> None:
    """Each service runs in its own container, so the notices between them (matching's task
    notices, history's command notices, the frontend's reply notices) go unanswered, each
    hop falling back to its fetch, unless the receiver listens beyond loopback."""
    text = COMPOSE.read_text()
    for service, variable in (("matching", "KADENCE_MATCHING_HOST"), ("history", "KADENCE_HISTORY_HEALTH_HOST"),
                              ("frontend", "KADENCE_FRONTEND_INTERNAL_HOST")):
        block = re.search(rf"^  {service}:\n((?:    .*\n|\s*\n)*)", text, flags=re.MULTILINE)
        assert block is not None, service
        assert f"{variable}: 0.0.0.0" in block.group(1), (service, variable)
