"""The command line of a service run on its own (``python -m services.X``).

A service is configured from the environment, not from arguments, so its command line is
small: ``--help`` says what the service is and lists the variables it reads (generated from
services/common/config.py, where they are defined), and any argument it does not take is a
usage error (exit 2) naming it, rather than a service started regardless.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.config import ENV_SETTINGS, EnvSetting, Reader


@dataclass(frozen=True)
class EnvLine:
    """One line of the environment in a --help: a variable, its default, what it does."""

    name: str
    default: str
    help: str

    @classmethod
    def of(cls, setting: EnvSetting) -> EnvLine:
        return cls(setting.name, setting.default_text(), setting.help)


# What every service also reads, defined in their own modules (listed there in full).
KAFKA_SECURITY_LINE = EnvLine("KADENCE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
                              "and the other KADENCE_KAFKA_* TLS/SASL variables (README, 'Operating safely')")
METRICS_LINE = EnvLine("KADENCE_METRICS_PORT", "unset",
                       "serve Prometheus metrics on this port (README, 'Traces and metrics')")
METRICS_HOST_LINE = EnvLine("KADENCE_METRICS_HOST", "127.0.0.1", "the metrics endpoint's address")
# The process's event loop and collector (services/common/loop.py), in the services that run on it.
LOOP_LINES = (EnvLine("KADENCE_EVENT_LOOP", "uvloop", "asyncio: the standard library's event loop instead"),
              EnvLine("KADENCE_GC", "tuned", "default: keep CPython's garbage-collector settings"))


def settings_lines(names: Iterable[str] | None = None, *, reader: Reader | None = None) -> list[EnvLine]:
    """The lines of the Settings variables: those named, in that order, or those ``reader`` reads
    (or every one)."""
    if names is None:
        return [EnvLine.of(s) for s in ENV_SETTINGS if reader is None or reader in s.readers]
    by_name = {s.name: s for s in ENV_SETTINGS}
    return [EnvLine.of(by_name[name]) for name in names]


def environment_help(lines: Iterable[EnvLine]) -> str:
    """The ``Environment:`` block of a --help, one variable a line."""
    rows = list(lines)
    width = max(len(f"{r.name}={r.default}") for r in rows)
    body = "\n".join(f"  {f'{r.name}={r.default}'.ljust(width)}  {r.help}" for r in rows)
    return f"environment (name=default):\n{body}"


def service_parser(program: str, description: str, lines: Iterable[EnvLine] | None = None, *,
                   extra: Iterable[EnvLine] = ()) -> argparse.ArgumentParser:
    """The argument parser of ``python -m services.<program>``: --help lists ``lines`` (default:
    the Settings variables ``program`` reads, Kafka security, metrics and the event loop), then
    ``extra``, the variables only that service's own modules read."""
    env = list(lines) if lines is not None else [*settings_lines(reader=Reader(program)), KAFKA_SECURITY_LINE,
                                                 METRICS_LINE, METRICS_HOST_LINE, *LOOP_LINES]
    env += extra
    return argparse.ArgumentParser(prog=f"python -m services.{program}", description=description,
                                   epilog=environment_help(env), formatter_class=argparse.RawDescriptionHelpFormatter)
