"""The HTTP/JSON transport to the frontend, and the mapping of its errors to exceptions.

Every call the client and the worker make goes through :meth:`HttpTransport.call`, so
error mapping, base paths and timeouts live in one place. Tests substitute any object with
the same ``call`` method.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import email.utils
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import aiohttp
import orjson
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from kadence.exceptions import (
    ActivityNotFoundError,
    QueryFailedError,
    ResourceExhaustedError,
    RPCError,
    WorkflowAlreadyClosedError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from kadence_protocol import exact_json
from kadence_protocol import tracing as _tracing

__all__ = ["API_KEY_ENV", "EncodedBody", "HttpTransport", "StreamingTransport", "Transport", "error_from_response",
           "path_segment"]

#: The environment variable a transport takes its credential from when none is given: every
#: client, worker and command-line tool of the SDK then authenticates the same way.
API_KEY_ENV = "KADENCE_API_KEY"

_ERRORS: dict[str, type[RPCError]] = {
    "WorkflowAlreadyStarted": WorkflowAlreadyStartedError,
    "WorkflowAlreadyClosed": WorkflowAlreadyClosedError,
    "WorkflowNotFound": WorkflowNotFoundError,
    "QueryFailed": QueryFailedError,
    "ActivityNotFound": ActivityNotFoundError,
}


class Transport(Protocol):
    """What the client and worker need from the wire."""

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A transport that can also read an answer whose items come one a line (POST
    /workflow-starts); the client sends concurrent starts together only through one."""

    def stream(self, method: str, path: str, *, body: Mapping[str, Any],
               timeout: float | None = None) -> AsyncIterator[dict[str, Any]]: ...


class EncodedBody(dict[str, Any]):
    """A request body that carries its JSON encoding, made once by whoever built it (the
    worker's answer batcher needs each answer's size, and a batch is the answers' encodings
    put together): the HTTP transport sends ``encoded`` as it is instead of encoding the body
    again. Any other transport sees a plain dict. Not to be changed once made."""

    __slots__ = ("encoded",)
    encoded: bytes

    @classmethod
    def of(cls, content: Mapping[str, Any], encoded: bytes | None = None) -> EncodedBody:
        """``content`` with its encoding (made here unless given)."""
        body = cls(content)  # dict's own constructor: no Python-level __init__ on every answer
        body.encoded = dumps(content if type(content) is dict else body) if encoded is None else encoded
        return body


def dumps(content: dict[str, Any]) -> bytes:
    """A body's JSON: orjson's, or json's for an integer past 64 bits, which orjson refuses
    to write while JSON holds it and the frontend reads it (kadence_protocol/exact_json.py)."""
    return exact_json.dumps(content)


def _encode(body: Mapping[str, Any]) -> bytes:
    if isinstance(body, EncodedBody):
        return body.encoded
    return dumps(body if type(body) is dict else dict(body))


_DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60)


def path_segment(value: str) -> str:
    """``value`` escaped for use as one path segment (workflow ids may contain '/')."""
    return quote(value, safe="")


def error_from_response(status: int, payload: Any, retry_after: str | None = None) -> RPCError:
    """The exception for an error answer ``{"error", "message", "field"}`` and its
    ``Retry-After`` header (``retry_after``), if any; without the header (an item's line of a
    call sent together has none), the body's ``retry_after_ms``."""
    asked = retry_after_seconds(retry_after)
    if isinstance(payload, Mapping):
        error_type = str(payload.get("error") or f"HTTP{status}")
        message = str(payload.get("message") or "")
        field = payload.get("field")
    else:
        error_type, message, field = f"HTTP{status}", str(payload)[:500], None
    if status == 429:
        return _exhausted(error_type, message, field, payload if isinstance(payload, Mapping) else {}, asked)
    if asked is None and isinstance(payload, Mapping):
        asked = _body_wait(payload.get("retry_after_ms"))
    cls = _ERRORS.get(error_type)
    if cls is None and status == 404 and error_type in ("NotFound", "WorkflowNotFound"):
        cls = WorkflowNotFoundError
    return (cls or RPCError)(status, error_type, message, str(field) if field is not None else None,
                             retry_after=asked or 0.0)


# The least wait a Retry-After (or a 429's retry_after_ms) gets: one asking for 0 ms (a proxy's,
# or a bucket a hair short of a token) would have the client resend in a tight loop for its
# whole retry budget.
MIN_RETRY_AFTER_S = 0.05


#: The longest ``Retry-After`` taken as meant: a longer one (or a date further ahead) is a
#: broken or hostile server's, and is read as not given.
MAX_RETRY_AFTER_S = 3600.0


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's wait in seconds (RFC 9110: whole seconds, or an HTTP date;
    a fraction is taken too), at least MIN_RETRY_AFTER_S; None when absent, unreadable, in
    the past or beyond MAX_RETRY_AFTER_S."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
        if seconds <= 0:
            return None
    if not 0 <= seconds <= MAX_RETRY_AFTER_S:  # NaN too
        return None
    return max(seconds, MIN_RETRY_AFTER_S)


def _body_wait(wait_ms: Any) -> float | None:
    """A body's ``retry_after_ms`` in seconds (at least MIN_RETRY_AFTER_S); None when absent,
    not a number, negative or beyond MAX_RETRY_AFTER_S."""
    if not isinstance(wait_ms, int | float) or isinstance(wait_ms, bool):
        return None
    if not 0 <= wait_ms <= MAX_RETRY_AFTER_S * 1000:  # NaN too
        return None
    return max(wait_ms / 1000, MIN_RETRY_AFTER_S)


def _exhausted(error_type: str, message: str, field: Any, payload: Mapping[str, Any],
               header: float | None) -> ResourceExhaustedError:
    """A 429's error: what the body says of the limit, and when to try again (the body's
    exact ``retry_after_ms``, else the Retry-After header, else 1 s; a body saying more than
    an hour is not taken; MIN_RETRY_AFTER_S at least)."""
    value = payload.get("limit_value")
    return ResourceExhaustedError(
        429, error_type, message, str(field) if field is not None else None,
        namespace=str(payload.get("namespace") or ""), limit=str(payload.get("limit") or ""),
        limit_value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
        retry_after=_body_wait(payload.get("retry_after_ms")) or header or 1.0)


def _bearer(api_key: str | None) -> dict[str, str]:
    if not api_key:
        return {}
    if api_key != api_key.strip() or any(ord(c) < 0x21 or ord(c) == 0x7F for c in api_key):
        raise ValueError("the API key must be one token without spaces or control characters")
    return {"Authorization": f"Bearer {api_key}"}


class HttpTransport:
    """aiohttp session bound to one namespace's API root.

    ``api_key`` (an API key or a JWT) goes as ``Authorization: Bearer ...`` on every call;
    None: ``$KADENCE_API_KEY`` if set; "": no credential.
    """

    def __init__(self, target: str, namespace: str, *, session: aiohttp.ClientSession | None = None,
                 api_key: str | None = None) -> None:
        self._target = target.rstrip("/")
        self._root = f"{self._target}/api/v1/namespaces/{path_segment(namespace)}"
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._auth: dict[str, str] = {}
        self.api_key = os.environ.get(API_KEY_ENV) if api_key is None else api_key

    @property
    def api_key(self) -> str | None:
        """The credential sent on every call; set it to rotate a key (or a JWT before it expires)."""
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._auth = _bearer(value)  # checked first: a bad key must not replace a good one
        self._json_auth = {**self._auth, "Content-Type": "application/json"}
        self._api_key = value or None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            # A call after close() would otherwise open a session nobody closes.
            raise RuntimeError("this Kadence client is closed; connect a new one")
        if self._session is None or self._session.closed:
            # Created lazily so the session binds to the loop that uses it. No connection
            # cap: long polls (worker polls, result waits) each hold a connection for up
            # to a minute, and aiohttp's default cap of 100 would starve the rest.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))
            self._owns_session = True
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        t = _tracing.tracer()
        # Long polls are the worker's idle loop, not part of any workflow's story: the task a
        # poll brings carries its own trace context in the answer.
        if t is None or path.endswith("/poll"):
            return await self._call(method, path, body=body, params=params, timeout=timeout, span=None)
        attributes = {"http.request.method": method, "url.full": self._url(path)}
        with t.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                return await self._call(method, path, body=body, params=params, timeout=timeout, span=span)
            except RPCError as err:
                if err.status:
                    span.set_attribute("http.response.status_code", err.status)
                span.set_attribute("error.type", err.error_type)
                span.set_status(Status(StatusCode.ERROR, err.message[:200]))
                raise

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        timeout: float | None,
        span: Span | None = None,
    ) -> dict[str, Any]:
        """One request and its answer; connection trouble is reported like a 503 (RPCError
        ``Unavailable``) so callers handle one error type. (Mapped here rather than by a
        coroutine around this one: every call of a worker's would hold one frame more.)"""
        try:
            query = {k: str(v) for k, v in params.items() if v is not None} if params else None
            client_timeout = _DEFAULT_TIMEOUT if timeout is None else aiohttp.ClientTimeout(total=timeout)
            # The body is encoded here, once, to bytes (orjson), rather than by aiohttp's json=,
            # which would make text of it and encode that again.
            data = None if body is None else _encode(body)
            headers = self._auth if data is None else self._json_auth
            if span is not None:
                headers = {**headers, **(_tracing.http_headers() or {})}
            added = _extra_headers.get()
            if added:
                headers = {**added, **headers}  # an interceptor's headers never replace the credential
            async with self._get_session().request(
                method, self._url(path), data=data, params=query, timeout=client_timeout, headers=headers,
            ) as response:
                if span is not None:
                    span.set_attribute("http.response.status_code", response.status)
                raw = await response.read()
                try:
                    # A task poll's answer, the large one of a worker, carries its payloads as
                    # JSON text (strings), which orjson reads exactly, but for a query task's
                    # args: it skips exact_json's look for long integers (a third of the parse
                    # of a 28 KB answer), so such an integer in a query's args reads as a float.
                    payload: Any = ((orjson.loads if path.endswith("/poll") else exact_json.loads)(raw)
                                    if raw else {})
                except ValueError:
                    payload = raw.decode(errors="replace")
                if response.status >= 400:
                    raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
                if not isinstance(payload, dict):
                    shown = raw[:200].decode(errors="replace")
                    raise RPCError(response.status, "BadResponse", f"expected a JSON object, got {shown!r}")
                return payload
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RPCError(0, "Unavailable", f"{method} {path}: {err!r}") from err

    async def stream(self, method: str, path: str, *, body: Mapping[str, Any],
                     timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """The items of an answer ``{"results": [...]}`` that the frontend writes one a line as
        each is ready, each yielded as it arrives. An error answer raises as :meth:`call` does;
        an answer cut short (no closing line) raises RPCError ``Unavailable`` after the items
        that did arrive, so the caller can ask again for the rest."""
        client_timeout = _DEFAULT_TIMEOUT if timeout is None else aiohttp.ClientTimeout(total=timeout)
        headers: Mapping[str, str] = self._json_auth
        added = _extra_headers.get()
        if added:
            headers = {**added, **headers}
        try:
            async with self._get_session().request(method, self._url(path), data=_encode(body),
                                                   timeout=client_timeout, headers=headers) as response:
                if response.status >= 400:
                    raw = await response.read()
                    try:
                        payload: Any = exact_json.loads(raw) if raw else {}
                    except ValueError:
                        payload = raw.decode(errors="replace")
                    raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
                async for item in _lines(response.content.iter_any()):
                    yield item
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RPCError(0, "Unavailable", f"{method} {path}: {err!r}") from err

    def _url(self, path: str) -> str:
        """A path under the namespace's root, or from the server's root if it starts with /api/
        (the namespace list and registration)."""
        return self._target + path if path.startswith("/api/") else self._root + path

    async def close(self) -> None:
        self._closed = True
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The items of a streamed ``{key: [...]}``: its first line opens it, each next line is one
    item (after the first, led by a comma), and ``]}`` closes it."""
    buffer, opened, closed = b"", False, False
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not opened:
                if not (line.startswith(b'{"') and line.endswith(b'":[')):
                    raise RPCError(200, "BadResponse", f"expected a streamed answer, got {line[:200]!r}")
                opened = True
            elif line == b"]}":
                closed = True
            elif line:
                try:
                    item = exact_json.loads(line[1:] if line[:1] == b"," else line)
                except ValueError:
                    raise RPCError(200, "BadResponse", f"a streamed item is not JSON: {line[:200]!r}") from None
                yield item
    if not opened and buffer:
        raise RPCError(200, "BadResponse", f"expected a streamed answer, got {buffer[:200]!r}")
    if not closed:
        raise RPCError(0, "Unavailable", "the streamed answer was cut short")


_extra_headers: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "kadence_extra_headers", default=None)


@contextlib.contextmanager
def extra_headers(headers: Mapping[str, str]) -> Iterator[None]:
    """Send ``headers`` with the HTTP calls made in the block (a client interceptor's)."""
    if not headers:
        yield
        return
    token = _extra_headers.set({**(_extra_headers.get() or {}), **headers})
    try:
        yield
    finally:
        _extra_headers.reset(token)
