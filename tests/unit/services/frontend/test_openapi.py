"""The OpenAPI document describes the API's authentication and its retryable errors (services/frontend/openapi.py)."""

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


def test_every_api_operation_documents_429_and_503_with_retry_after() -> None:
    doc = document()
    for path, methods in doc["paths"].items():
        if not path.startswith(PREFIX):
            continue
        for method, op in methods.items():
            for code in ("429", "503"):
                answer = op["responses"][code]
                assert answer["headers"]["Retry-After"]["required"] is True, (method, path, code)
                assert "Retry-After" in answer["description"], (method, path, code)
