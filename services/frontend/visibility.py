"""The visibility operations of the API: list and count workflow runs by query, and the
registry of custom search attributes. Mixed into ``Handlers`` (handlers.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER
from services.common.visibility.reads import VisibilityReads
from services.common.visibility.sql import MAX_PAGE_SIZE, AttributeType, QueryError, stored_attributes

from . import validation as v
from .errors import FrontendError, InvalidArgument
from .validation import StartRequest

Params = Mapping[str, str]
Answer = tuple[int, dict[str, Any]]

DEFAULT_PAGE_SIZE = 100
# Percent-encoded, a character is up to 12 bytes: 2,000 of them, a page token and the path
# stay within the request line the server reads (app.MAX_REQUEST_LINE).
MAX_QUERY_CHARS = 2_000


class VisibilityUnavailable(FrontendError):
    status = 501
    error = "NotImplemented"


class VisibilityHandlers:
    visibility: VisibilityReads | None = None

    def _reads(self) -> VisibilityReads:
        if self.visibility is None:
            raise VisibilityUnavailable("this frontend has no visibility store")
        return self.visibility

    async def with_search_attributes(self, req: StartRequest, body: Mapping[str, Any]) -> StartRequest:
        """``req`` with the body's ``search_attributes`` checked against the namespace's registry."""
        given = body.get("search_attributes")
        if given is None or given == {}:
            return req
        try:
            values = stored_attributes(await self._reads().search_attributes(req.namespace), given)
        except QueryError as exc:
            raise InvalidArgument(str(exc), field="search_attributes") from None
        return dataclasses.replace(req, search_attributes=orjson.dumps(values).decode())

    async def bad_upserts(self, ns: str, commands: list[dict[str, Any]]) -> str | None:
        """Check (and normalise in place) the search attributes that ``commands`` set
        (workflow.upsert_search_attributes: a marker; workflow.continue_as_new: the new
        run's); the problem, or None if they hold."""
        upserts = [(c["attributes"], "details", "upsert_search_attributes") for c in commands
                   if c["command_type"] == "RecordMarker"
                   and c["attributes"].get("marker_name") == SEARCH_ATTRIBUTES_MARKER]
        upserts += [(c["attributes"], "search_attributes", "continue_as_new") for c in commands
                    if c["command_type"] == "ContinueAsNewWorkflowExecution"
                    and c["attributes"].get("search_attributes")]
        if not upserts:
            return None
        custom = await self._reads().search_attributes(ns)
        for attributes, field, where in upserts:
            try:
                values = orjson.loads(attributes.get(field) or "null")
            except orjson.JSONDecodeError:
                return f"{where}: the search attributes are not JSON"
            try:
                attributes[field] = orjson.dumps(stored_attributes(custom, values)).decode()
            except QueryError as exc:
                return f"{where}: {exc}"
        return None

    async def list_workflows(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        q = dict(query)
        text = v.optional_str(q, "query", max_len=MAX_QUERY_CHARS) or ""
        page_size = v.int_in(q, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        token = v.optional_str(q, "next_page_token")
        try:
            page = await self._reads().list(ns, text, page_size=page_size, token=token)
        except QueryError as exc:
            raise InvalidArgument(str(exc), field="next_page_token" if "next_page_token" in str(exc)
                                  else "query") from None
        return 200, {"executions": page.executions, "next_page_token": page.next_page_token}

    async def count_workflows(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        text = v.optional_str(dict(query), "query", max_len=MAX_QUERY_CHARS) or ""
        try:
            return 200, await self._reads().count(ns, text)
        except QueryError as exc:
            raise InvalidArgument(str(exc), field="query") from None

    async def list_search_attributes(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        from services.common.visibility.sql import BUILT_INS

        ns = v.namespace(path["namespace"])
        custom = await self._reads().search_attributes(ns)
        return 200, {"built_in": {name: b.type.value for name, b in BUILT_INS.items()},
                     "custom": {name: kind.value for name, kind in sorted(custom.items())}}

    async def register_search_attribute(self, path: Params, query: Params, body: dict[str, Any]) -> Answer:
        ns = v.namespace(path["namespace"])
        name = v.name(body, "name")
        if not name.isascii() or not (name[:1].isalpha() and name.replace("_", "").isalnum()) or len(name) > 100:
            raise InvalidArgument("name must be a letter then letters, digits or '_' (at most 100)", field="name")
        raw_type = body.get("type")
        try:
            kind = AttributeType(str(raw_type))
        except ValueError:
            raise InvalidArgument(f"type must be one of {', '.join(t.value for t in AttributeType)}",
                                  field="type") from None
        try:
            created = await self._reads().register(ns, name, kind)
        except QueryError as exc:
            raise InvalidArgument(str(exc), field="name") from None
        return (201 if created else 200), {"name": name, "type": kind.value}


def bad_search_attributes(message: str) -> dict[str, Any]:
    """The Failure of a workflow task whose search attributes the registry refused."""
    return {"message": message, "type": "BadSearchAttributes", "stack_trace": "", "non_retryable": False,
            "details": None}
