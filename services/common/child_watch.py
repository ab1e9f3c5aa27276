"""Processes `kadence dev` runs itself and cannot work without: when its broker exits, say so
loudly; when its PostgreSQL has gone, start it again.

`kadence dev` runs its Kafka broker (Tansu, keeping records in memory) as a child. When that
child exits, nothing starts it again and what it held is gone: every produce fails and every
consumer retries for ever while the process goes on answering HTTP. Rather than that silent
stall, the process is declared fatal (it stops and exits 1), so a supervisor, or the person
who ran it, starts a fresh one; workflows carry on from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess

from .embedded import EmbeddedPostgres
from .supervision import Fatal

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the child is looked at: a poll() is a waitpid, nothing more


async def watch_child(process: subprocess.Popen[bytes], what: str, fatal: Fatal, *,
                      every: float = POLL_S) -> None:
    """Declare ``fatal`` once ``process`` has exited; cancel this to stop watching."""
    # A Popen has no awaitable exit (a thread blocked in wait() could not be cancelled).
    while process.poll() is None:  # noqa: ASYNC110
        await asyncio.sleep(every)
    fatal.declare(f"{what} exited (code {process.returncode})")


async def keep_postgres(pg: EmbeddedPostgres, fatal: Fatal, *, every: float = POLL_S, attempts: int = 3) -> None:
    """Start ``pg`` again whenever its server has gone (killed, crashed): nothing else would,
    and the services' loops retry their connections until it is back (their outage backoff),
    then carry on from what it committed. Fatal after ``attempts`` failed starts in a row.

    A start may return while the server is still down: pgserver takes a killed postmaster not
    yet reaped for a live one and starts nothing. So the server is said to be back only once
    it is seen running (the next turn), the next turns try again meanwhile, and the outage is
    said once."""
    failures = 0
    gone = False
    while True:
        await asyncio.sleep(every)
        if pg.running():
            if gone:
                log.info("kadence dev's PostgreSQL is running again")
                gone = False
            failures = 0
            continue
        if not gone:
            log.warning("kadence dev's PostgreSQL has gone; starting it again")
            gone = True
        try:
            await asyncio.to_thread(pg.resume)
        except Exception as exc:  # noqa: BLE001 - any failure to start counts; the last one is said
            failures += 1
            log.warning("PostgreSQL did not start again (%d of %d): %r", failures, attempts, exc)
            if failures >= attempts:
                fatal.declare(f"kadence dev's PostgreSQL did not start again: {exc!r}")
                return
