"""``python -m services.visibility``: the visibility projection's faust app (stream.py);
``python -m services.visibility rebuild [--namespace NS]``: rebuild the rows from the topic
(rebuild.py). Both read ``KADENCE_KAFKA_BOOTSTRAP`` and ``KADENCE_DATABASE_URL``."""

import argparse
import asyncio
import logging
import os
import sys

if sys.argv[1:2] == ["rebuild"]:
    from .rebuild import rebuild

    parser = argparse.ArgumentParser(prog="python -m services.visibility rebuild",
                                     description="Delete the visibility rows and project kadence.history again.")
    parser.add_argument("--namespace", help="rebuild this namespace only (default: all)")
    args = parser.parse_args(sys.argv[2:])
    dsn = os.environ.get("KADENCE_DATABASE_URL", "")
    if not dsn:
        raise SystemExit("KADENCE_DATABASE_URL is not set (a PostgreSQL DSN)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    read = asyncio.run(rebuild(os.environ.get("KADENCE_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), dsn,
                               namespace=args.namespace))
    print(f"visibility rebuilt from {read} records of kadence.history")
else:
    from .stream import main

    main()
