"""How long `kadence dev` takes to stop, from the signal (Ctrl-C's SIGINT, or SIGTERM) to its exit.

Each run starts `kadence dev` of a source tree in a new data directory (ports of the system's
choice), waits 2 s once it runs, optionally with a Kafka client of a user's connected to its
broker (``--client``: one TCP connection, which the broker waits for at SIGTERM), sends the
signal and prints the time to the exit, the exit code and whether a traceback was printed::

    python -m benchmarks.dev_stop --client --runs 3            # this tree
    python -m benchmarks.dev_stop --tree OTHER_TREE --client   # another (an export of a revision)

Trees are compared alternated (A B B A ...) in one sitting, as ``benchmarks.compare`` does.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_KAFKA = re.compile(r"Kafka: +127\.0\.0\.1:(\d+)")


def stop_once(tree: Path, sig: signal.Signals, client: bool) -> tuple[float, int, bool]:
    """(seconds from the signal to the exit, exit code, traceback printed)."""
    with tempfile.TemporaryDirectory(prefix="kadence-dev-stop-") as tmp:
        log = Path(tmp) / "out.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "kadence.cli", "dev", "--data-dir", str(Path(tmp) / "data"), "--port", "0",
                 "--kafka-port", "0"], cwd=tree, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        held: socket.socket | None = None
        try:
            deadline = time.monotonic() + 120
            while "Press Ctrl-C" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kadence dev did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            if client:
                found = _KAFKA.search(log.read_text())
                assert found is not None
                held = socket.create_connection(("127.0.0.1", int(found[1])))
            time.sleep(2)
            started = time.monotonic()
            process.send_signal(sig)
            code = process.wait(timeout=60)
            took = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if held is not None:
                held.close()
        return took, code, "Traceback" in log.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=Path("."), help="the source tree to run (default: this one)")
    parser.add_argument("--signal", choices=["SIGINT", "SIGTERM"], default="SIGINT")
    parser.add_argument("--client", action="store_true", help="keep a client connected to its broker")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.runs):
        took, code, traceback = stop_once(args.tree.resolve(), signal.Signals[args.signal], args.client)
        print(f"{args.tree} {args.signal} client={args.client}: stop {took:.2f} s, exit {code},"
              f" traceback={traceback}", flush=True)


if __name__ == "__main__":
    main()
