"""The ``kadence`` command: the client's commands (``workflow``, ``namespace``, ``schedule``,
``encode``) and, when the server is installed (``pip install 'kadence[server]'``), the
server's (``dev``, ``dlq``, ``audit``: services/cli.py).

Nothing of the server is imported until one of its commands is asked for: a worker's
machine with the SDK alone gets the client's commands and, for a server command, a line
saying what to install.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

# The server's commands (services/cli.py COMMANDS), listed even when it is not installed.
SERVER_COMMANDS = {
    "dev": "run broker, PostgreSQL, frontend, history and matching in one process",
    "dlq": "list and re-drive dead letters (kadence.dlq)",
    "audit": "replay kadence.history and check it against PostgreSQL",
}
SERVER_INSTALL = "pip install 'kadence[server]'"


def version() -> str:
    """The installed distribution's version (pyproject.toml's, once installed)."""
    from importlib import metadata

    try:
        return metadata.version("kadence")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _server_cli() -> ModuleType | None:
    """services/cli.py when the server and its libraries are installed, else None."""
    try:
        from services import cli
    except ImportError:
        return None
    return None if cli.missing() else cli


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["workflow"]:  # a click group of its own (kadence/_cli/workflow.py)
        from kadence._cli.workflow import main as workflow_main

        return workflow_main(words[1:])
    if words[:1] == ["task-queue"]:  # kadence/_cli/task_queue.py
        from kadence._cli.task_queue import main as task_queue_main

        return task_queue_main(words[1:])
    if words[:1] in (["namespace"], ["schedule"]):  # click groups of their own (kadence/_admin_cli.py)
        from kadence._admin_cli import main as admin_main

        return admin_main(words)
    server = _server_cli() if not words or words[0] in SERVER_COMMANDS or words[0].startswith("-") else None
    if words[:1] and words[0] in SERVER_COMMANDS and server is None:
        print(f"kadence {words[0]} needs the server: {SERVER_INSTALL}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="kadence", description="Kadence durable workflows")
    parser.add_argument("--version", action="version", version=f"kadence {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    if server is not None:
        server.add_commands(sub)  # dev, dlq, audit
    else:
        for name, text in SERVER_COMMANDS.items():
            sub.add_parser(name, help=f"{text} (needs the server: {SERVER_INSTALL})", add_help=False)
    from kadence._tools_cli import add_commands

    add_commands(sub)  # encode
    sub.add_parser("workflow", help="list, count, describe, show, start, execute, signal, query, update, cancel,"
                                    " terminate, reset, result (kadence workflow --help)", add_help=False)
    sub.add_parser("namespace", help="create, describe, list, update namespaces (kadence namespace --help)",
                   add_help=False)
    sub.add_parser("schedule", help="create, describe, list, pause, unpause, trigger, delete schedules"
                                    " (kadence schedule --help)", add_help=False)
    sub.add_parser("task-queue", help="describe a task queue: pollers and backlog (kadence task-queue --help)",
                   add_help=False)
    args = parser.parse_args(words)
    if hasattr(args, "run"):
        return int(args.run(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
