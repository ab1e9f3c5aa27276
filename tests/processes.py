"""Stopping a process a test started in a session of its own (``start_new_session=True``).

faust apps may linger after SIGTERM, and their children with them: the whole process group
is sent SIGTERM, then SIGKILL if it has not ended within the time given. Only the group of
the PID the test started is signalled, never processes found by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(process: subprocess.Popen[bytes] | subprocess.Popen[str], *, grace: float = 5.0) -> None:
    """Stop ``process``'s group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
