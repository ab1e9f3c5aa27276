"""The OpenAPI document describes the API's authentication (services/frontend/openapi.py)."""

from __future__ import annotations

from services.frontend.handlers import PREFIX
from services.frontend.openapi import document


def test_bearer_scheme_and_401_403_on_every_api_operation() -> None:
    doc = document()
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearer": []}]
    api = [op for path, ops in doc["paths"].items() if path.startswith(PREFIX) for op in ops.values()]
    assert api
    for op in api:
        assert {"401", "403"} <= set(op["responses"]), op["operationId"]
    # Liveness stays open.
    assert doc["paths"]["/health"]["get"]["security"] == []
