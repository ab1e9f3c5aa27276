"""The visibility routes as the OpenAPI document declares them: every answer they give is
documented, and every query the document allows reaches the handler."""

from __future__ import annotations

from urllib.parse import quote

from services.frontend.app import MAX_REQUEST_LINE
from services.frontend.openapi import document
from services.frontend.visibility import MAX_QUERY_CHARS

PATH = "/api/v1/namespaces/{namespace}"


def test_registering_documents_both_created_and_already_registered() -> None:
    op = document()["paths"][f"{PATH}/search-attributes"]["post"]
    assert {"200", "201"} <= set(op["responses"])


def test_the_longest_allowed_list_query_fits_the_request_line() -> None:
    # aiohttp refuses a longer request line with a plain-text 400 before any handler runs.
    for path, name in ((f"{PATH}/workflows", "list_workflows"), (f"{PATH}/workflows/count", "count_workflows")):
        op = document()["paths"][path]["get"]
        assert op["operationId"] == name
        query = next(p for p in op["parameters"] if p["name"] == "query")
        assert query["schema"]["maxLength"] == MAX_QUERY_CHARS
    worst = quote("\U0001f600" * MAX_QUERY_CHARS)  # 4 UTF-8 bytes: 12 characters each
    token = "A" * 4000  # a page token holding long sort values
    line = f"GET /api/v1/namespaces/{'n' * 100}/workflows?query={worst}&page_size=1000&next_page_token={token} HTTP/1.1"
    assert len(line.encode()) <= MAX_REQUEST_LINE
