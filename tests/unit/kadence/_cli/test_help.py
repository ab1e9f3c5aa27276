"""`kadence --help` and the server commands' --help read as finished: every workflow
command named, and each command says what it does above its options."""

from __future__ import annotations

import pytest

from kadence.cli import main


def _help(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_top_level_help_names_every_workflow_command(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    for command in ("update", "cancel", "reset", "result"):
        assert command in text.split(" workflow list,", 1)[1].split("(kadence workflow --help)", 1)[0], text


@pytest.mark.parametrize(("words", "says"), [
    (("dev",), "Run broker, PostgreSQL"),
    (("dlq",), "List and re-drive dead letters"),
    (("dlq", "list"), "oldest first: offset"),
    (("dlq", "redrive"), "original key"),
    (("audit",), "Replay kadence.history"),
    (("encode",), "murmur2_random"),
    (("encode", "cancel"), "recorded with the request in history"),
    (("encode", "update"), "the update handler's name"),
])
def test_server_commands_describe_themselves(capsys: pytest.CaptureFixture[str], words: tuple[str, ...],
                                             says: str) -> None:
    assert says in _help(capsys, *words)


def test_the_server_commands_stay_available_once_faust_is_imported(capsys: pytest.CaptureFixture[str]) -> None:
    # faust replaces its module by one without __spec__, which importlib's find_spec refuses:
    # a process that had imported it (the visibility app, a test run) said "needs the server".
    import faust  # noqa: F401

    from services.cli import missing

    assert missing() == []
    assert "Run broker, PostgreSQL" in _help(capsys, "dev")


@pytest.mark.parametrize("group", ["workflow", "namespace", "schedule", "task-queue"])
def test_every_group_says_exit_4_is_no_answer_including_a_timeout(capsys: pytest.CaptureFixture[str],
                                                                  group: str) -> None:
    # `kadence workflow query` with no worker ends 4 (a 504): the help must not say 4 is only
    # "the frontend is unreachable".
    assert main([group, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "4 no answer, worth retrying: the frontend is unreachable, unavailable (503), timed out (504, e.g." \
           " no worker answered a query) or throttled the namespace (429, over its limit)" in text, text
