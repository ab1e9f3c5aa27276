"""What every click CLI of ``kadence`` shares: the connection options, the output option,
the exit codes and the mapping of the SDK's errors onto them.

``kadence workflow``, ``kadence namespace``, ``kadence schedule`` and ``kadence task-queue``
take the same ``--address``, ``--namespace``, ``--api-key`` and ``--output`` (with the same
environment variables) and end with the same exit codes, so a script learns them once.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from kadence._client import Client
from kadence.exceptions import (
    QueryFailedError,
    ResourceExhaustedError,
    RPCError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    status_words,
)
from kadence_protocol.visible_text import visible as visible  # re-exported for the commands

DEFAULT_ADDRESS = "http://127.0.0.1:7233"
IDENTITY = "kadence-cli"
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
T = TypeVar("T")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # the workflow failed/timed out/was terminated, the server refused, still running at --timeout
    USAGE = 2  # bad arguments, a request the server refused as malformed (400)
    NOT_FOUND = 3  # no such workflow, namespace, schedule
    UNAVAILABLE = 4  # no answer: no connection, 503, 504 (e.g. no worker answered a query) or 429; retry may help
    WORKFLOW = 1  # the workflow CLI's earlier name of FAILED (an alias: the same member)


#: What exit code 4 means, said the same way in every group's --help and the README.
NO_ANSWER_HELP = ("4 no answer, worth retrying: the frontend is unreachable, unavailable (503), timed out"
                  " (504, e.g. no worker answered a query) or throttled the namespace (429, over its limit).")
EXIT_CODES_HELP = ("Exit codes: 0 ok; 1 failed or refused by the server; 2 usage errors and malformed requests;"
                   " 3 not found; " + NO_ANSWER_HELP)


class Output(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


class Failed(click.ClickException):
    """End the command with ``code`` after printing ``Error: message`` to stderr."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = int(code)

    def show(self, file: Any = None) -> None:
        click.echo(click.style("Error: ", fg="red", bold=True) + visible(self.format_message()), err=True)


@dataclass(frozen=True)
class Connection:
    """Where and as whom a command talks to the frontend."""

    address: str = DEFAULT_ADDRESS
    namespace: str = "default"
    api_key: str | None = None


# ---- options ------------------------------------------------------------------------------------

_SETTINGS_KEY = "kadence_cli"


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Given on a group or again on its subcommand: the innermost given value wins.
    if value is not None:
        ctx.find_root().meta.setdefault(_SETTINGS_KEY, {})[str(param.name)] = value
    return value


def _common(group: bool, expose: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"callback": _keep, "expose_value": expose, "show_envvar": group}
    if not group:
        common["is_eager"] = True  # stored before the command runs, over the group's value
    return common


def connection_options(*, group: bool = True, expose: bool = True) -> Decorator:
    """``--address``, ``--namespace``/``-n`` and ``--api-key``.

    ``group=True`` gives them their defaults and environment variables (on a group, or on a
    command that has no group options above it); ``group=False`` repeats them on a
    subcommand without defaults, so they may be written before or after it. ``expose``
    passes them to the function as parameters; :func:`connection` reads them anywhere.
    """

    def options(f: Callable[..., Any]) -> Callable[..., Any]:
        common = _common(group, expose)
        f = click.option("--api-key", envvar="KADENCE_API_KEY" if group else None, default=None,
                         help="An API key or JWT, when the frontend asks for one.", **common)(f)
        f = click.option("--namespace", "-n", default="default" if group else None, show_default=group,
                         envvar="KADENCE_NAMESPACE" if group else None, help="The namespace.", **common)(f)
        return click.option("--address", default=DEFAULT_ADDRESS if group else None, show_default=group,
                            envvar="KADENCE_ADDRESS" if group else None,
                            help="The frontend's HTTP address.", **common)(f)

    return options


def output_option(*, group: bool = True, expose: bool = True) -> Decorator:
    """``--output``/``-o`` ``table|json`` (``KADENCE_OUTPUT``); placed like :func:`connection_options`."""

    def option(f: Callable[..., Any]) -> Callable[..., Any]:
        return click.option("--output", "-o", type=click.Choice([o.value for o in Output]),
                            default=Output.TABLE.value if group else None, show_default=group,
                            envvar="KADENCE_OUTPUT" if group else None,
                            help="A table for people, or JSON for scripts.", **_common(group, expose))(f)

    return option


def global_options(*, group: bool) -> Decorator:
    """Connection and output options on a group (``group=True``) and again on each of its
    subcommands, read with :func:`connection` and :func:`output`."""

    def options(f: Callable[..., Any]) -> Callable[..., Any]:
        return connection_options(group=group, expose=False)(output_option(group=group, expose=False)(f))

    return options


def _settings() -> dict[str, Any]:
    ctx = click.get_current_context()
    return dict(ctx.find_root().meta.get(_SETTINGS_KEY, {}))


def connection() -> Connection:
    """The connection the current command was given (options, environment, defaults)."""
    given = _settings()
    return Connection(address=given.get("address") or os.environ.get("KADENCE_ADDRESS") or DEFAULT_ADDRESS,
                      namespace=given.get("namespace") or os.environ.get("KADENCE_NAMESPACE") or "default",
                      api_key=given.get("api_key") or os.environ.get("KADENCE_API_KEY") or None)


def output() -> Output:
    return Output(_settings().get("output") or os.environ.get("KADENCE_OUTPUT") or Output.TABLE.value)


# ---- running a call -----------------------------------------------------------------------------


def exit_code_of(exc: RPCError) -> ExitCode:
    """The exit code of an error answered by (or on the way to) the frontend."""
    if exc.status == 404:
        return ExitCode.NOT_FOUND
    if exc.status in (0, 429, 503, 504):
        return ExitCode.UNAVAILABLE
    if exc.status == 400:
        return ExitCode.USAGE
    return ExitCode.FAILED


def run(conn: Connection, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client of ``conn``; the SDK's errors become :class:`Failed`."""

    async def main() -> T:
        client = await Client.connect(conn.address, namespace=conn.namespace, identity=IDENTITY,
                                      api_key=conn.api_key)
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        # The standard loop, no collector tuning (services/common/loop.py): a few calls, then exit.
        return asyncio.run(main())
    except Failed:
        raise
    except WorkflowFailureError as exc:
        message = (exc.failure or {}).get("message")
        raise Failed(ExitCode.FAILED, f"workflow {status_words(exc.status)}" + (f": {message}" if message else "")) \
            from None
    except (WorkflowAlreadyStartedError, QueryFailedError) as exc:
        raise Failed(ExitCode.FAILED, exc.message or str(exc)) from None
    except TimeoutError as exc:
        raise Failed(ExitCode.FAILED, str(exc) or "timed out") from None
    except RPCError as exc:
        if exc.status == 0:
            cause = exc.__cause__
            detail = (str(cause) or type(cause).__name__) if cause is not None else exc.message
            raise Failed(ExitCode.UNAVAILABLE, f"cannot reach the frontend at {conn.address} ({detail}); is it"
                                               " running? Point --address or KADENCE_ADDRESS at it") from None
        if isinstance(exc, ResourceExhaustedError):
            # The frontend's message gives the wait already; the limit's key is for scripts.
            raise Failed(ExitCode.UNAVAILABLE, f"throttled: {exc.message} (namespace {exc.namespace!r}, limit"
                                               f" {exc.limit})") from None
        where = f" (field {exc.field})" if exc.field else ""
        raise Failed(exit_code_of(exc), f"{exc.error_type}: {exc.message}{where}") from None
    except ValueError as exc:  # the SDK refused an argument before sending anything
        raise Failed(ExitCode.USAGE, str(exc)) from None


def main(group: click.Group, argv: list[str], prog_name: str) -> int:
    """Run ``group`` with ``argv``; return the exit code (usage errors 2, Ctrl-C 130)."""
    try:
        # Without standalone mode, --help's exit comes back as the return value.
        code = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.ClickException as exc:  # UsageError (2) and Failed (its own code)
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    return code if isinstance(code, int) else 0


# ---- printing -----------------------------------------------------------------------------------


class _Console(Console):
    """Prints what the server answered as it is: no rich markup read in it (a workflow type
    'T[/]' ended `kadence workflow list` in a traceback, and '[reverse]...' restyled an id)
    and its control characters made visible. The commands' own styling uses Text."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(visible(text), **kwargs)


def console() -> Console:
    # Piped output keeps whole lines (no wrapping at 80 columns) unless COLUMNS says otherwise.
    width = int(os.environ.get("COLUMNS", "0") or 0) or (None if sys.stdout.isatty() else 200)
    return _Console(width=width, highlight=False, soft_wrap=False, markup=False, emoji=False)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def name_values(values: Iterable[str], option: str) -> dict[str, Any]:
    """``NAME=VALUE`` options as a mapping: VALUE is JSON, or else taken as a string (so
    ``CustomerId=c-42`` needs no quotes and ``Priority=3`` is a number)."""
    out: dict[str, Any] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out
