"""``python -m services.visibility``: the visibility projection's faust app (stream.py);
``python -m services.visibility rebuild [--namespace NS]``: rebuild the rows from the topic
(rebuild.py). Both read ``KADENCE_KAFKA_BOOTSTRAP`` and ``KADENCE_DATABASE_URL``; ``--help``
lists what they read, and any other argument is a usage error (exit 2)."""

import asyncio
import logging
import os

from services.common.usage import (
    KAFKA_SECURITY_LINE,
    METRICS_HOST_LINE,
    METRICS_LINE,
    EnvLine,
    service_parser,
    settings_lines,
)

from .stream import SESSION_TIMEOUT_DEFAULT_S, SESSION_TIMEOUT_ENV, check_start, main

ENVIRONMENT = [*settings_lines(["KADENCE_KAFKA_BOOTSTRAP", "KADENCE_DATABASE_URL"]),
               EnvLine(SESSION_TIMEOUT_ENV, f"{SESSION_TIMEOUT_DEFAULT_S:g}",
                       "the faust consumer group's session timeout (seconds)"),
               EnvLine("KADENCE_HOME", "unset", "faust's state goes under $KADENCE_HOME/visibility (unset:"
                       " $XDG_STATE_HOME/kadence, else ~/.local/state/kadence)"),
               KAFKA_SECURITY_LINE, METRICS_LINE, METRICS_HOST_LINE]

parser = service_parser("visibility", "Kadence visibility: keeps the rows that list and count read, projected"
                        " from kadence.history (a faust app; one is enough). Configured from the environment.",
                        ENVIRONMENT)
commands = parser.add_subparsers(dest="command", metavar="{rebuild}")
rebuilding = commands.add_parser("rebuild", help="delete the visibility rows and project kadence.history again",
                                 description="Delete the visibility rows and project kadence.history again.")
rebuilding.add_argument("--namespace", help="rebuild this namespace only (default: all)")
args = parser.parse_args()

if args.command == "rebuild":
    from .rebuild import rebuild

    dsn = os.environ.get("KADENCE_DATABASE_URL", "")
    if not dsn:
        raise SystemExit("KADENCE_DATABASE_URL is not set (a PostgreSQL DSN)")
    bootstrap = os.environ.get("KADENCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    check_start(bootstrap, dsn)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    read = asyncio.run(rebuild(bootstrap, dsn,
                               namespace=args.namespace))
    print(f"visibility rebuilt from {read} records of kadence.history")
else:
    main()
