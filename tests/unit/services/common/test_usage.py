"""Each service's command line: ``--help`` says what it is and lists the variables it reads
(from services/common/config.py), and an argument it does not take is a usage error (exit 2)
naming it, never a service started regardless."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.config import ENV_SETTINGS, EnvKind, EnvSetting, Reader, Settings
from services.common.usage import environment_help, settings_lines

ROOT = Path(__file__).resolve().parents[4]
SERVICES = ["history", "matching", "frontend", "visibility"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # Nothing to connect to: a service started by mistake fails or hangs, never reaches a real cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KADENCE_")}
    env |= {"KADENCE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "KADENCE_DATABASE_URL": "postgresql://127.0.0.1:1/none"}
    try:
        return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:  # the child is killed by run()
        pytest.fail(f"python -m {' '.join(args)} did not end: it started the service")


@pytest.mark.parametrize("service", SERVICES)
def test_help_says_what_the_service_is_and_lists_its_environment(service: str) -> None:
    done = _run(f"services.{service}", "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: python -m services.{service}" in done.stdout
    assert f"Kadence {service}:" in done.stdout
    assert "KADENCE_KAFKA_BOOTSTRAP=127.0.0.1:9092" in done.stdout
    assert "KADENCE_DATABASE_URL=unset" in done.stdout
    if service != "visibility":  # the faust app reads only its own few
        reader = Reader(service)
        listed = {s.name for s in ENV_SETTINGS if f"  {s.name}=" in done.stdout}
        assert listed == {s.name for s in ENV_SETTINGS if reader in s.readers}
        assert "KADENCE_COLOCATE" not in done.stdout  # kadence dev's alone
    else:
        assert "KADENCE_VISIBILITY_SESSION_TIMEOUT_S=10" in done.stdout
        assert "KADENCE_HOME=unset" in done.stdout  # where the faust app keeps its state
    # README, "Traces and metrics" and "Benchmarks": read outside config.py, listed too.
    assert "KADENCE_METRICS_HOST=127.0.0.1" in done.stdout
    assert ("KADENCE_EVENT_LOOP=uvloop" in done.stdout) == ("KADENCE_GC=tuned" in done.stdout) == \
        (service != "visibility")
    assert ("KADENCE_TRACE_UI_URL=unset" in done.stdout) == (service == "frontend")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("argument", ["--bogus", "extra"])
def test_an_argument_it_does_not_take_is_a_usage_error_naming_it(service: str, argument: str) -> None:
    done = _run(f"services.{service}", argument)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert argument in done.stderr
    assert f"usage: python -m services.{service}" in done.stderr


def test_every_setting_but_the_composite_ones_has_its_variable() -> None:
    # Kafka security has its own variables (kadence_protocol/kafka_security.py); the instance id none.
    fields = {f.name for f in dataclasses.fields(Settings)} - {"kafka_security", "instance_id"}
    assert sorted(s.field for s in ENV_SETTINGS) == sorted(fields)
    assert len({s.name for s in ENV_SETTINGS}) == len(ENV_SETTINGS)


def test_from_env_reads_each_kind_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in ENV_SETTINGS:
        monkeypatch.delenv(s.name, raising=False)
    defaults = Settings.from_env()
    assert (defaults.shards, defaults.history_fetch_wait_ms, defaults.insecure, defaults.colocate) == (4, None, False,
                                                                                                     True)
    monkeypatch.setenv("KADENCE_SHARDS", "8")
    monkeypatch.setenv("KADENCE_HISTORY_FETCH_WAIT_MS", "0")
    monkeypatch.setenv("KADENCE_INSECURE", "Yes")
    monkeypatch.setenv("KADENCE_COLOCATE", "no")
    monkeypatch.setenv("KADENCE_FRONTEND_HOST", "0.0.0.0")
    chosen = Settings.from_env()
    assert (chosen.shards, chosen.history_fetch_wait_ms, chosen.insecure, chosen.colocate,
            chosen.frontend_host) == (8, 0, True, False, "0.0.0.0")
    assert {s.kind for s in ENV_SETTINGS} == set(EnvKind)


def test_the_environment_block_has_one_line_a_variable_with_its_default() -> None:
    text = environment_help(settings_lines(["KADENCE_SHARDS", "KADENCE_INSECURE", "KADENCE_COLOCATE"]))
    lines = text.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["KADENCE_SHARDS=4", "KADENCE_INSECURE=0", "KADENCE_COLOCATE=1"]


@pytest.mark.parametrize(("service", "own", "not_its_own"), [
    ("history", "KADENCE_HISTORY_TAIL_RUN_BYTES", "KADENCE_FRONTEND_PORT"),
    ("matching", "KADENCE_MATCHING_PORT", "KADENCE_TASK_TOKEN_KEYS"),
    ("frontend", "KADENCE_TASK_TOKEN_KEYS", "KADENCE_STALL_AFTER_MS"),
])
def test_a_service_lists_the_variables_it_reads_and_not_the_others(service: str, own: str, not_its_own: str) -> None:
    text = environment_help(settings_lines(reader=Reader(service)))
    assert f"  {own}=" in text and not_its_own not in text


# The packages that read a setting by attribute; the fetch waits are read through
# services/common/fetch_waits.py by the consumer each names.
_PACKAGES = {Reader.HISTORY: "history", Reader.MATCHING: "matching", Reader.FRONTEND: "frontend"}


@pytest.mark.parametrize("setting", [s for s in ENV_SETTINGS if s.kind is not EnvKind.CHOSEN_INT
                                     or not s.name.endswith("_FETCH_WAIT_MS")], ids=lambda s: s.name)
def test_a_service_whose_code_reads_a_setting_lists_it(setting: EnvSetting) -> None:
    for reader, package in _PACKAGES.items():
        code = " ".join(p.read_text() for p in (ROOT / "services" / package).rglob("*.py"))
        if re.search(rf"\.{setting.field}\b", code):
            assert reader in setting.readers, f"services/{package} reads {setting.field}; its --help must list it"
