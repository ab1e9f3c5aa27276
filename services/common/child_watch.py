"""A child process the process cannot work without: when it exits, say so loudly.

`kadence dev` runs its Kafka broker (Tansu, keeping records in memory) as a child. When that
child exits, nothing starts it again and what it held is gone: every produce fails and every
consumer retries for ever while the process goes on answering HTTP. Rather than that silent
stall, the process is declared fatal (it stops and exits 1), so a supervisor, or the person
who ran it, starts a fresh one; workflows carry on from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess

from .supervision import Fatal

POLL_S = 0.5  # how often the child is looked at: a poll() is a waitpid, nothing more


async def watch_child(process: subprocess.Popen[bytes], what: str, fatal: Fatal, *,
                      every: float = POLL_S) -> None:
    """Declare ``fatal`` once ``process`` has exited; cancel this to stop watching."""
    # A Popen has no awaitable exit (a thread blocked in wait() could not be cancelled).
    while process.poll() is None:  # noqa: ASYNC110
        await asyncio.sleep(every)
    fatal.declare(f"{what} exited (code {process.returncode})")
