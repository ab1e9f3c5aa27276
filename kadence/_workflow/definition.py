"""Workflow definitions: what the ``@workflow.*`` decorators record and the checks they run.

A decorator checks its target when it is applied, so a malformed workflow fails at import
time with a message naming the class and method, not later inside a worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from kadence.common import HandlerUnfinishedPolicy
from kadence_protocol.queries import CANCEL_CHILD_SIGNAL, UPDATE_RESULT_NAME

__all__ = [
    "WorkflowDefinition",
    "defn",
    "query",
    "query_name_of",
    "run",
    "signal",
    "signal_name_of",
    "unfinished_policy_of",
    "update",
    "update_name_of",
    "workflow_name_of",
]

_DEFINITION = "__kadence_workflow_definition__"
_RUN = "__kadence_workflow_run__"
_WORKFLOW_NAME = "__kadence_workflow_name__"
_SIGNAL = "__kadence_signal_name__"
_QUERY = "__kadence_query_name__"
_UPDATE = "__kadence_update_name__"
_VALIDATOR = "__kadence_update_validator__"
_UNFINISHED = "__kadence_unfinished_policy__"

ClassT = TypeVar("ClassT", bound=type)
CallableT = TypeVar("CallableT", bound=Callable[..., Any])


@dataclass(frozen=True)
class WorkflowDefinition:
    """A validated workflow class: its type name, run method and handlers by name."""

    name: str
    cls: type
    run_fn: Callable[..., Any]
    signals: Mapping[str, Callable[..., Any]]
    queries: Mapping[str, Callable[..., Any]]
    updates: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    def validator_of(self, update_name: str) -> Callable[..., Any] | None:
        """The validator of the update handler named ``update_name``, if it has one."""
        handler = self.updates.get(update_name)
        return getattr(handler, _VALIDATOR, None) if handler is not None else None

    @staticmethod
    def of(cls: type) -> WorkflowDefinition:
        """The definition of a ``@workflow.defn`` class; TypeError for anything else."""
        found = cls.__dict__.get(_DEFINITION) if isinstance(cls, type) else None
        if not isinstance(found, WorkflowDefinition):
            raise TypeError(f"{cls!r} is not a workflow: decorate the class with @workflow.defn")
        return found


def _plain_function(fn: Any, decorator: str) -> Callable[..., Any]:
    if isinstance(fn, staticmethod | classmethod):
        raise TypeError(f"{decorator} must decorate an instance method, not a {type(fn).__name__}")
    if not inspect.isfunction(fn):
        raise TypeError(f"{decorator} must decorate a function defined in a class, got {fn!r}")
    params = list(inspect.signature(fn).parameters)
    if not params:
        raise TypeError(f"{decorator} method {fn.__qualname__} must take self as its first parameter")
    return fn


def run(fn: CallableT) -> CallableT:
    """Mark the one ``async`` method that runs the workflow."""
    _plain_function(fn, "@workflow.run")
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@workflow.run method {fn.__qualname__} must be declared `async def`")
    setattr(fn, _RUN, True)
    return fn


@overload
def signal(fn: CallableT) -> CallableT: ...


@overload
def signal(*, name: str | None = None,
           unfinished_policy: HandlerUnfinishedPolicy = ...) -> Callable[[CallableT], CallableT]: ...


def signal(fn: CallableT | None = None, *, name: str | None = None,
           unfinished_policy: HandlerUnfinishedPolicy = HandlerUnfinishedPolicy.WARN_AND_ABANDON,
           ) -> CallableT | Callable[[CallableT], CallableT]:
    """Mark a signal handler (sync or async); the signal name defaults to the method name.
    ``unfinished_policy``: whether an async handler still running when the run closes is
    warned about (the default) or silently abandoned."""

    def decorate(f: CallableT) -> CallableT:
        _plain_function(f, "@workflow.signal")
        signal_name = name if name is not None else f.__name__
        if not signal_name:
            raise ValueError(f"@workflow.signal on {f.__qualname__}: name must not be empty")
        if signal_name == CANCEL_CHILD_SIGNAL:
            raise ValueError(f"@workflow.signal on {f.__qualname__}: {signal_name!r} is reserved")
        setattr(f, _SIGNAL, signal_name)
        setattr(f, _UNFINISHED, HandlerUnfinishedPolicy(unfinished_policy))
        return f

    return decorate(fn) if fn is not None else decorate


@overload
def query(fn: CallableT) -> CallableT: ...


@overload
def query(*, name: str | None = None) -> Callable[[CallableT], CallableT]: ...


def query(fn: CallableT | None = None, *, name: str | None = None) -> CallableT | Callable[[CallableT], CallableT]:
    """Mark a query handler; queries read state and must not await, so it must be a plain def."""

    def decorate(f: CallableT) -> CallableT:
        _plain_function(f, "@workflow.query")
        if inspect.iscoroutinefunction(f):
            raise TypeError(
                f"@workflow.query method {f.__qualname__} must be a plain `def`: "
                "queries read workflow state and cannot await"
            )
        query_name = name if name is not None else f.__name__
        if not query_name:
            raise ValueError(f"@workflow.query on {f.__qualname__}: name must not be empty")
        setattr(f, _QUERY, query_name)
        return f

    return decorate(fn) if fn is not None else decorate


@overload
def update(fn: CallableT) -> CallableT: ...


@overload
def update(*, name: str | None = None,
           unfinished_policy: HandlerUnfinishedPolicy = ...) -> Callable[[CallableT], CallableT]: ...


def update(fn: CallableT | None = None, *, name: str | None = None,
           unfinished_policy: HandlerUnfinishedPolicy = HandlerUnfinishedPolicy.WARN_AND_ABANDON,
           ) -> CallableT | Callable[[CallableT], CallableT]:
    """Mark an update handler (sync or async); the update name defaults to the method name.

    The caller gets what the handler returns, or the ApplicationError it raises. A validator
    is optional: ``@my_update.validator`` on a plain ``def`` taking the same arguments; it
    runs before the update is accepted, must not change the workflow, and rejects the update
    by raising (nothing is recorded in history then). ``unfinished_policy``: whether a
    handler still running when the run closes is warned about (the default) or silently
    abandoned (its caller gets WorkflowAlreadyClosedError either way).
    """

    def decorate(f: CallableT) -> CallableT:
        _plain_function(f, "@workflow.update")
        update_name = name if name is not None else f.__name__
        if not update_name:
            raise ValueError(f"@workflow.update on {f.__qualname__}: name must not be empty")
        if update_name == UPDATE_RESULT_NAME:
            raise ValueError(f"@workflow.update on {f.__qualname__}: {update_name!r} is reserved")
        setattr(f, _UPDATE, update_name)
        setattr(f, _UNFINISHED, HandlerUnfinishedPolicy(unfinished_policy))

        def validator(v: Callable[..., Any]) -> Callable[..., Any]:
            _plain_function(v, f"@{f.__name__}.validator")
            if inspect.iscoroutinefunction(v):
                raise TypeError(f"update validator {v.__qualname__} must be a plain `def`: it cannot await")
            setattr(f, _VALIDATOR, v)
            return v

        f.validator = validator  # type: ignore[attr-defined]
        return f

    return decorate(fn) if fn is not None else decorate


@overload
def defn(cls: ClassT) -> ClassT: ...


@overload
def defn(*, name: str | None = None) -> Callable[[ClassT], ClassT]: ...


def defn(cls: ClassT | None = None, *, name: str | None = None) -> ClassT | Callable[[ClassT], ClassT]:
    """Mark a class as a workflow; its type name defaults to the class name."""

    def decorate(c: ClassT) -> ClassT:
        if not inspect.isclass(c):
            raise TypeError(f"@workflow.defn must decorate a class, got {c!r}")
        workflow_name = name if name is not None else c.__name__
        if not workflow_name:
            raise ValueError(f"@workflow.defn on {c.__qualname__}: name must not be empty")
        runs = [attr for attr, value in vars(c).items() if getattr(value, _RUN, False)]
        if len(runs) > 1:
            raise TypeError(
                f"workflow {c.__qualname__} has more than one @workflow.run method: {', '.join(runs)}"
            )
        if not runs:
            inherited = [k for k in dir(c) if getattr(getattr(c, k, None), _RUN, False)]
            hint = (
                f" (it inherits {inherited[0]!r}; override it and call super())" if inherited else ""
            )
            raise TypeError(f"workflow {c.__qualname__} has no @workflow.run method{hint}")
        run_fn = vars(c)[runs[0]]
        signals: dict[str, Callable[..., Any]] = {}
        queries: dict[str, Callable[..., Any]] = {}
        updates: dict[str, Callable[..., Any]] = {}
        # Walk base classes first so a subclass's handler replaces its parent's.
        for klass in reversed(c.__mro__):
            for attr, value in vars(klass).items():
                for marker, table, kind in ((_SIGNAL, signals, "signal"), (_QUERY, queries, "query"),
                                            (_UPDATE, updates, "update")):
                    handler_name = getattr(value, marker, None)
                    if handler_name is None:
                        continue
                    previous = table.get(handler_name)
                    if previous is not None and klass is c and previous.__name__ != attr:
                        raise TypeError(
                            f"workflow {c.__qualname__} has two {kind} handlers named "
                            f"{handler_name!r}: {previous.__name__} and {attr}"
                        )
                    table[handler_name] = value
        if not _constructible_without_args(c):
            raise TypeError(f"workflow {c.__qualname__} must be constructible without arguments")
        definition = WorkflowDefinition(workflow_name, c, run_fn, signals, queries, updates)
        setattr(c, _DEFINITION, definition)
        setattr(run_fn, _WORKFLOW_NAME, workflow_name)
        return c

    return decorate(cls) if cls is not None else decorate


def _constructible_without_args(c: type) -> bool:
    try:
        sig = inspect.signature(c)
    except (TypeError, ValueError):
        return True
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in sig.parameters.values()
    )


def workflow_name_of(workflow: str | type | Callable[..., Any]) -> str:
    """The workflow type name for a name, a ``@workflow.defn`` class or its run method."""
    if isinstance(workflow, str):
        return workflow
    if isinstance(workflow, type):
        return WorkflowDefinition.of(workflow).name
    found = getattr(workflow, _WORKFLOW_NAME, None)
    if isinstance(found, str):
        return found
    raise TypeError(f"{workflow!r} is not a workflow name, @workflow.defn class or @workflow.run method")


def unfinished_policy_of(handler: Callable[..., Any]) -> HandlerUnfinishedPolicy:
    """What a signal or update handler still running when its run closes does."""
    return HandlerUnfinishedPolicy(getattr(handler, _UNFINISHED, HandlerUnfinishedPolicy.WARN_AND_ABANDON))


def signal_name_of(signal_: str | Callable[..., Any]) -> str:
    """The signal name for a name or a ``@workflow.signal`` method."""
    if isinstance(signal_, str):
        return signal_
    found = getattr(signal_, _SIGNAL, None)
    if isinstance(found, str):
        return found
    raise TypeError(f"{signal_!r} is not a signal name or @workflow.signal method")


def update_name_of(update_: str | Callable[..., Any]) -> str:
    """The update name for a name or an ``@workflow.update`` method."""
    if isinstance(update_, str):
        return update_
    found = getattr(update_, _UPDATE, None)
    if isinstance(found, str):
        return found
    raise TypeError(f"{update_!r} is not an update name or @workflow.update method")


def query_name_of(query_: str | Callable[..., Any]) -> str:
    """The query name for a name or a ``@workflow.query`` method."""
    if isinstance(query_, str):
        return query_
    found = getattr(query_, _QUERY, None)
    if isinstance(found, str):
        return found
    raise TypeError(f"{query_!r} is not a query name or @workflow.query method")


def run_result_type(workflow: str | type | Callable[..., Any]) -> Any:
    """The return annotation of a workflow's run method (None for a type name): what its
    result is converted to by the client, the test environment and a parent workflow."""
    from kadence.converter import signature_of

    if isinstance(workflow, str):
        return None
    run_fn = WorkflowDefinition.of(workflow).run_fn if isinstance(workflow, type) else workflow
    return signature_of(run_fn, method=True).result
