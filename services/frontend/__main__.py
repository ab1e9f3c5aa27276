"""``python -m services.frontend [--insecure]``: one frontend instance, configured from the environment."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from services.common import loop as _loop
from services.common.colocation import KafkaCommands
from services.common.config import settings_or_exit
from services.common.runner import run_service
from services.common.usage import EnvLine, service_parser

from .app import FrontendService
from .auth import Authenticator
from .exposure import UnsafeBind, check_bind
from .tokens import KEYS_SETTING, TokenKeys
from .ui.web import TRACE_UI_ENV


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("frontend", "Kadence frontend: the HTTP API of clients, workers and the web UI."
                            " Configured from the environment.",
                            extra=[EnvLine(TRACE_UI_ENV, "unset", "the web UI's link to a run's trace, e.g."
                                           " http://jaeger:16686/trace/{trace_id}")])
    parser.add_argument("--insecure", action="store_true",
                        help="serve the API beyond loopback without authentication (as KADENCE_INSECURE=1)")
    args = parser.parse_args(argv)
    settings = settings_or_exit("frontend")
    if args.insecure:
        settings = dataclasses.replace(settings, insecure=True)
    # Checked before anything is started, so a misconfigured frontend says why at once.
    try:
        check_bind(settings.frontend_host, auth_configured=bool(settings.auth_config), insecure=settings.insecure)
    except UnsafeBind as exc:
        raise SystemExit(f"frontend: {exc}") from None
    # Frontends behind one address must share the keys (a task polled through one is answered
    # through another), and tokens must survive a restart: no made-up key here.
    if not settings.task_token_keys:
        raise SystemExit(f"frontend: {KEYS_SETTING} is not set: give it one or more keys (comma-separated, the first"
                         f" signs task tokens; every frontend the same), e.g. {TokenKeys.new_key()}")
    try:
        TokenKeys.parse(settings.task_token_keys)
        if settings.auth_config:
            Authenticator.from_file(Path(settings.auth_config))
    except ValueError as exc:  # AuthConfigError included
        raise SystemExit(f"frontend: {exc}") from None
    with contextlib.suppress(KeyboardInterrupt):
        # A frontend on its own: history fetches its commands (services/common/colocation.py).
        _loop.run(run_service(FrontendService(settings, commands=KafkaCommands()), settings, "frontend"))


if __name__ == "__main__":
    main()
