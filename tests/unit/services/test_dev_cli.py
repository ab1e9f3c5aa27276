"""``kadence dev`` refuses what it cannot use in one line, before starting anything: a shard
count below 1, a port out of range, a ``KADENCE_*`` variable it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import cli


def _dev(argv: list[str]) -> int:
    from kadence.cli import main

    return main(["dev", *argv])


@pytest.mark.parametrize("shards", ["0", "-1", "two"])
def test_shards_below_one_are_a_usage_error(shards: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _dev(["--data-dir", str(tmp_path), "--shards", shards])
    assert exited.value.code == 2
    assert "--shards" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--port", "--kafka-port", "--metrics-port"])
def test_ports_out_of_range_are_a_usage_error(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _dev(["--data-dir", str(tmp_path), flag, "70000"])
    assert exited.value.code == 2
    assert "0 to 65535" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "value", "said"), [
    ("KADENCE_STALL_AFTER_MS", "abc", "KADENCE_STALL_AFTER_MS must be an integer, got 'abc'"),
    ("KADENCE_INTERNAL_KEY", "short", "KADENCE_INTERNAL_KEY must have at least 16 characters"),
])
def test_an_unreadable_setting_is_one_line_naming_it(name: str, value: str, said: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(name, value)
    assert _dev(["--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err == f"kadence dev: {said}\n"


@pytest.mark.parametrize(("name", "value", "said"), [
    ("KADENCE_METRICS_PORT", "abc", "KADENCE_METRICS_PORT must be a port number (0 to 65535), got 'abc'"),
    ("KADENCE_METRICS_PORT", "70000", "KADENCE_METRICS_PORT must be a port number (0 to 65535), got '70000'"),
    ("KADENCE_METRICS_PORT", "-1", "KADENCE_METRICS_PORT must be a port number (0 to 65535), got '-1'"),
    ("OTEL_TRACES_EXPORTER", "bogus", "bogus"),
])
def test_unusable_telemetry_settings_are_one_line(name: str, value: str, said: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(tmp_path / "data"), "--port", "0", "--kafka-port", "0"]
    assert _dev(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kadence dev: ") and said in err and err.count("\n") == 1, err


def test_positive_and_port_types() -> None:
    assert cli._positive("3") == 3
    assert cli._port("0") == 0
    assert cli._port("7233") == 7233


def test_help_names_where_the_data_directory_defaults_to(capsys: pytest.CaptureFixture[str]) -> None:
    """README, "Run": the directory above ``dev`` is $KADENCE_HOME, else $XDG_STATE_HOME/kadence."""
    with pytest.raises(SystemExit):
        _dev(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "$KADENCE_HOME/dev, else $XDG_STATE_HOME/kadence/dev, else ~/.local/state/kadence/dev" in said
