"""The options and exit codes every ``kadence`` click CLI shares (kadence/_cli/common.py)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kadence._cli import common
from kadence._cli.common import Connection, ExitCode, Failed, Output
from kadence._client import Client
from kadence.exceptions import ResourceExhaustedError, RPCError, WorkflowFailureError, WorkflowNotFoundError


@click.group()
@common.global_options(group=True)
def group() -> None:
    pass


@group.command()
@common.global_options(group=False)
def show() -> None:
    conn = common.connection()
    click.echo(f"{conn.address} {conn.namespace} {conn.api_key} {common.output().value}")


def _invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(group, list(args), env=env or {})
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_options_before_or_after_the_subcommand_and_from_the_environment() -> None:
    clean = {"KADENCE_ADDRESS": "", "KADENCE_NAMESPACE": "", "KADENCE_API_KEY": "", "KADENCE_OUTPUT": ""}
    assert _invoke("show", env=clean) == f"{common.DEFAULT_ADDRESS} default None table"
    assert _invoke("-n", "shop", "show", "--api-key", "k", "-o", "json", env=clean) == \
        f"{common.DEFAULT_ADDRESS} shop k json"
    env = {"KADENCE_ADDRESS": "http://h:1", "KADENCE_NAMESPACE": "env", "KADENCE_API_KEY": "ek",
           "KADENCE_OUTPUT": "json"}
    assert _invoke("show", env=env) == "http://h:1 env ek json"
    # The subcommand's option wins over the group's.
    assert _invoke("-n", "first", "show", "-n", "second", env=env) == "http://h:1 second ek json"


@pytest.mark.parametrize(("error", "code"), [
    (RPCError(404, "NamespaceNotFound", "no"), ExitCode.NOT_FOUND),
    (WorkflowNotFoundError(404, "WorkflowNotFound", "no"), ExitCode.NOT_FOUND),
    (RPCError(400, "BadRequest", "malformed"), ExitCode.USAGE),
    (RPCError(409, "ScheduleAlreadyExists", "taken"), ExitCode.FAILED),
    (RPCError(403, "PermissionDenied", "no"), ExitCode.FAILED),
    (RPCError(503, "Unavailable", "later"), ExitCode.UNAVAILABLE),
    (RPCError(0, "ConnectionError", "refused"), ExitCode.UNAVAILABLE),
    (WorkflowFailureError("Failed", {"message": "boom"}), ExitCode.FAILED),
    (TimeoutError("still running"), ExitCode.FAILED),
    (ValueError("bad argument"), ExitCode.USAGE),
])
def test_errors_become_one_exit_code_each(error: Exception, code: ExitCode) -> None:
    async def work(client: Client) -> None:
        raise error

    with pytest.raises(Failed) as caught:
        common.run(Connection(), work)
    assert caught.value.exit_code == int(code)


@pytest.mark.parametrize(("status", "failure", "said"), [
    ("TimedOut", None, "workflow timed out"),
    ("ContinuedAsNew", None, "workflow continued as new"),
    ("Terminated", None, "workflow terminated"),
    ("Failed", {"message": "boom"}, "workflow failed: boom"),
])
def test_a_workflow_that_did_not_complete_is_said_in_words(status: str, failure: dict[str, str] | None,
                                                           said: str) -> None:
    async def work(client: Client) -> None:
        raise WorkflowFailureError(status, failure)

    with pytest.raises(Failed) as caught:
        common.run(Connection(), work)
    assert caught.value.format_message() == said


def test_a_throttled_call_says_the_frontends_refusal_once() -> None:
    message = "namespace 'shop' is over its limit of 5 requests a second on this frontend; retry after 0.67s"

    async def work(client: Client) -> None:
        raise ResourceExhaustedError(429, "ResourceExhausted", message, namespace="shop", limit="rps",
                                     limit_value=5, retry_after=0.67)

    with pytest.raises(Failed) as caught:
        common.run(Connection(), work)
    assert caught.value.exit_code == int(ExitCode.UNAVAILABLE)
    assert caught.value.format_message() == f"throttled: {message} (namespace 'shop', limit rps)"


def test_main_returns_the_exit_code() -> None:
    @click.group()
    def cli() -> None:
        pass

    @cli.command()
    def boom() -> None:
        raise Failed(ExitCode.NOT_FOUND, "gone")

    assert common.main(cli, ["--help"], "t") == 0
    assert common.main(cli, ["boom"], "t") == 3
    assert common.main(cli, ["nonsense"], "t") == 2
    assert Output("json") is Output.JSON


def test_visible_shows_control_characters_and_bidi_overrides_as_escapes() -> None:
    assert common.visible("a\x1b[2J\x07b\x9b\u202ec\x7f") == "a\\x1b[2J\\x07b\\x9b\\u202ec\\x7f"
    assert common.visible("line\n\ttab é ✓ 👩\u200d💻") == "line\n\ttab é ✓ 👩\u200d💻"  # kept as they are


def test_the_console_reads_no_markup_in_what_it_prints() -> None:
    console = common.console()
    with console.capture() as captured:
        console.print("T[/] [reverse]x[/reverse] :warning: \x1b[31m")
    assert captured.get().strip() == "T[/] [reverse]x[/reverse] :warning: \\x1b[31m"
