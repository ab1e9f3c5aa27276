"""Authentication and per-namespace authorization of the HTTP API (issue 21, item 1).

A caller presents ``Authorization: Bearer <credential>``. The credential is either a static
API key (small setups) or a JWT verified with PyJWT (jwt_verify.py): HS256 under a
configured secret, or RS256/ES256 under a configured public key or a JWKS file. Either one
yields a ``Principal``: a name and its grants, each grant a namespace (or ``*``), a set of
permissions and, for workers, the task queues they may poll.

Permissions, per operation (``OPERATION_PERMISSIONS``, keyed by the route table's handler
names; an operation missing from it is refused, so a new route must be classified):

- read: describe, history, result, query, list and count workflows, list search attributes
- write: start, signal, signal-with-start, terminate
- worker: polls, task answers, heartbeats, query answers; a task answer only for a task of a
  task queue the worker may poll (the task queue its token names)
- admin: implies the three above; registers search attributes; creating and updating
  namespaces (creating and listing them need an admin grant on ``*``, since no namespace
  is in their path; so does setting a namespace's limits, which an admin of that namespace
  alone could otherwise lift)

Schedules: describe and list need read; create, pause, unpause, trigger, delete need write.
Describing a task queue (pollers, backlog) needs read.

The configuration is a JSON file named by ``KADENCE_AUTH_CONFIG``::

    {"api_keys": [{"name": "ci", "sha256": "<hex SHA-256 of the key>",
                   "grants": [{"namespace": "shop", "permissions": ["read", "write"]}]}],
     "jwt": {"hs256_secrets": ["<secret, 32+ characters>"], "public_keys": ["@/etc/kadence/idp.pem"],
             "jwks_file": "/etc/kadence/jwks.json", "algorithms": ["HS256", "RS256"],
             "issuer": "https://idp", "audience": "kadence", "leeway_s": 30}}

API keys are stored as hashes, so the file does not hold a usable credential. A JWT must
carry ``sub`` and ``exp`` (and ``iss``/``aud`` when configured) and its grants in the
``kadence_grants`` claim, in the same form as an API key's. Several secrets or keys may
verify (a key rotates with two valid at once). The accepted algorithms come from the
configuration, never from the token.

Missing credentials or credentials that do not verify: 401 ``Unauthenticated``. A verified
caller without the permission: 403 ``PermissionDenied``.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import json_policy

from .errors import FrontendError, PermissionDenied
from .jwt_verify import JwtConfigError, JwtRejected, JwtVerifier


class Unauthenticated(FrontendError):
    status = 401
    error = "Unauthenticated"


class AuthConfigError(ValueError):
    """The authentication configuration cannot be used (the frontend refuses to start)."""


class Permission(enum.Enum):
    READ = "read"
    WRITE = "write"
    WORKER = "worker"
    ADMIN = "admin"


OPERATION_PERMISSIONS: Mapping[str, Permission] = {
    "describe": Permission.READ, "history": Permission.READ, "result": Permission.READ,
    "result_batch": Permission.READ,
    "query": Permission.READ,
    "start": Permission.WRITE, "start_batch": Permission.WRITE, "signal": Permission.WRITE,
    "signal_with_start": Permission.WRITE,
    "terminate": Permission.WRITE, "cancel": Permission.WRITE, "reset": Permission.WRITE,
    "update": Permission.WRITE,
    "poll_workflow_tasks": Permission.WORKER, "poll_activity_tasks": Permission.WORKER,
    "complete_workflow_task": Permission.WORKER, "fail_workflow_task": Permission.WORKER,
    "timer_ahead_workflow_task": Permission.WORKER,
    "respond_query": Permission.WORKER, "answer_tasks": Permission.WORKER,
    "complete_activity_task": Permission.WORKER, "fail_activity_task": Permission.WORKER,
    "heartbeat_activity_task": Permission.WORKER, "cancel_activity_task": Permission.WORKER,
    "activity_task_token": Permission.WORKER,
    "list_workflows": Permission.READ, "count_workflows": Permission.READ,
    "list_search_attributes": Permission.READ, "register_search_attribute": Permission.ADMIN,
    # Namespaces and schedules (admin.py).
    "create_namespace": Permission.ADMIN, "list_namespaces": Permission.ADMIN,
    "update_namespace": Permission.ADMIN, "describe_namespace": Permission.READ,
    "describe_schedule": Permission.READ, "list_schedules": Permission.READ,
    "create_schedule": Permission.WRITE, "delete_schedule": Permission.WRITE, "pause_schedule": Permission.WRITE,
    "unpause_schedule": Permission.WRITE, "trigger_schedule": Permission.WRITE,
    # Task queues (task_queues.py).
    "describe_task_queue": Permission.READ,
}


@dataclass(frozen=True)
class Grant:
    """Permissions in one namespace (``*``: every namespace); ``task_queues`` None: all of them."""

    namespace: str
    permissions: frozenset[Permission]
    task_queues: frozenset[str] | None = None

    def allows(self, permission: Permission, namespace: str, task_queue: str | None) -> bool:
        if self.namespace not in ("*", namespace):
            return False
        if permission not in self.permissions and Permission.ADMIN not in self.permissions:
            return False
        return task_queue is None or self.task_queues is None or task_queue in self.task_queues


@dataclass(frozen=True)
class Principal:
    name: str
    grants: tuple[Grant, ...]

    def allows(self, permission: Permission, namespace: str, task_queue: str | None = None) -> bool:
        return any(g.allows(permission, namespace, task_queue) for g in self.grants)


def _grants(raw: object, where: str) -> tuple[Grant, ...]:
    if not isinstance(raw, list):
        raise AuthConfigError(f"{where}: grants must be a list")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("namespace"), str):
            raise AuthConfigError(f"{where}: grants[{i}] needs a namespace")
        try:
            permissions = frozenset(Permission(p) for p in item.get("permissions", []))
        except (ValueError, TypeError):
            raise AuthConfigError(f"{where}: grants[{i}].permissions must be among "
                                  f"{[p.value for p in Permission]}") from None
        queues = item.get("task_queues")
        if queues is not None and not json_policy.is_string_list(queues):
            raise AuthConfigError(f"{where}: grants[{i}].task_queues must be a list of names")
        out.append(Grant(item["namespace"], permissions, None if queues is None else frozenset(queues)))
    return tuple(out)


@dataclass
class Authenticator:
    """Turns a bearer credential into a ``Principal`` and checks its permissions."""

    api_keys: Mapping[str, Principal] = field(default_factory=dict)  # by hex SHA-256 of the key
    jwt: JwtVerifier | None = None
    clock: Callable[[], float] = time.time

    @classmethod
    def from_file(cls, path: Path) -> Authenticator:
        data = json_policy.read(path, AuthConfigError, f"authentication configuration {path}")
        return cls.from_mapping(data, where=str(path))

    @classmethod
    def from_mapping(cls, raw: object, *, where: str = "authentication configuration") -> Authenticator:
        data = json_policy.json_object(raw, where, AuthConfigError)
        keys: dict[str, Principal] = {}
        for i, item in enumerate(data.get("api_keys", [])):
            name, digest = (item.get("name"), item.get("sha256")) if isinstance(item, dict) else (None, None)
            if not isinstance(name, str) or not isinstance(digest, str) or len(digest) != 64:
                raise AuthConfigError(f"{where}: api_keys[{i}] needs a name and the key's sha256 (64 hex digits)")
            keys[digest.lower()] = Principal(name, _grants(item.get("grants"), f"{where}: api_keys[{i}]"))
        jwt = None
        raw_jwt = data.get("jwt")
        if raw_jwt is not None:
            if not isinstance(raw_jwt, dict):
                raise AuthConfigError(f"{where}: jwt must be an object")
            try:
                jwt = JwtVerifier.from_mapping(raw_jwt, where=where)
            except JwtConfigError as exc:
                raise AuthConfigError(str(exc)) from None
        if not keys and jwt is None:
            raise AuthConfigError(f"{where}: configures neither api_keys nor jwt: nobody could call the API")
        return cls(keys, jwt)

    @staticmethod
    def key_digest(key: str) -> str:
        """What the configuration stores for an API key."""
        return hashlib.sha256(key.encode()).hexdigest()

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("this API needs credentials: send Authorization: Bearer <API key or JWT>")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("the Authorization header must be: Bearer <API key or JWT>")
        if credential.count(".") == 2 and self.jwt is not None:
            return self._jwt(credential, self.jwt)
        principal = self.api_keys.get(self.key_digest(credential))
        if principal is None:
            raise Unauthenticated("the credential is not a known API key or a valid JWT")
        return principal

    def _jwt(self, token: str, verifier: JwtVerifier) -> Principal:
        try:
            claims = verifier.verify(token, self.clock())
        except JwtRejected as exc:
            raise Unauthenticated(str(exc)) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the JWT has no subject (sub)")
        try:
            grants = _grants(claims.get("kadence_grants", []), "the JWT's kadence_grants")
        except AuthConfigError as exc:
            raise Unauthenticated(str(exc)) from None
        return Principal(subject, grants)

    def authorize(self, principal: Principal, operation: str, namespace: str, task_queue: str | None = None) -> None:
        permission = OPERATION_PERMISSIONS.get(operation)
        if permission is None:
            raise PermissionDenied(f"{operation} is not open to callers")
        if not principal.allows(permission, namespace, task_queue):
            where = f"namespace {namespace!r}" + (f", task queue {task_queue!r}" if task_queue else "")
            raise PermissionDenied(f"{principal.name} lacks the {permission.value} permission in {where}")

    def check(self, authorization: str | None, operation: str, namespace: str,
              task_queue: str | None = None) -> Principal:
        """Authenticate and authorize one call in one step."""
        principal = self.authenticate(authorization)
        self.authorize(principal, operation, namespace, task_queue)
        return principal


# The caller of the API call being served (set by the route in app.py while its handler runs),
# for the checks that need the request's body: the task queue a task token names.
_caller: ContextVar[tuple[Authenticator, Principal] | None] = ContextVar("kadence_caller", default=None)


CallerMark = Token[tuple["Authenticator", Principal] | None]


def serving(auth: Authenticator, principal: Principal) -> CallerMark:
    """Mark ``principal`` as the caller of the call being served; give the result to ``served``."""
    return _caller.set((auth, principal))


def served(mark: CallerMark) -> None:
    _caller.reset(mark)


def authorize_task_queue(operation: str, namespace: str, task_queue: str) -> None:
    """403 unless the caller (if authentication is on) may ``operation`` on ``task_queue``: a
    worker answers only tasks of the task queues it may poll, whatever token it holds."""
    caller = _caller.get()
    if caller is not None:
        auth, principal = caller
        auth.authorize(principal, operation, namespace, task_queue)


def authorize_everywhere(what: str) -> None:
    """403 unless the caller (if authentication is on) is an admin in every namespace (a
    grant on ``*``): for what one namespace's admin must not decide for itself, as its limits,
    which keep it from crowding the other tenants out."""
    caller = _caller.get()
    if caller is not None and not caller[1].allows(Permission.ADMIN, "*"):
        raise PermissionDenied(f"{caller[1].name} lacks the admin permission in every namespace (*),"
                               f" which {what} needs")


def caller_may(operation: str, namespace: str, task_queue: str) -> bool:
    """Whether the caller (if authentication is on) may ``operation`` on ``task_queue``:
    :func:`authorize_task_queue` for a route that answers a refusal as not found."""
    try:
        authorize_task_queue(operation, namespace, task_queue)
    except PermissionDenied:
        return False
    return True


def worker_task_queues(namespace: str) -> frozenset[str] | None:
    """The task queues of ``namespace`` the caller may poll; None for every one (so always
    when authentication is off): the scope of a query answer (query_scope.py)."""
    caller = _caller.get()
    if caller is None:
        return None
    queues: set[str] = set()
    for grant in caller[1].grants:
        if grant.allows(Permission.WORKER, namespace, None):
            if grant.task_queues is None:
                return None
            queues |= grant.task_queues
    return frozenset(queues)


def api_key_entry(name: str, key: str, grants: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """An ``api_keys`` item of the configuration for ``key`` (stores only its hash)."""
    return {"name": name, "sha256": Authenticator.key_digest(key), "grants": list(grants)}
