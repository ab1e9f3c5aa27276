"""Service settings, read once from the environment (``KADENCE_*``)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

# The listen queue of the HTTP servers. A burst of new clients must not overflow it
# (aiohttp's default is 128): the kernel drops the connections it cannot queue, and
# each such client waits a second or more before it tries again. The kernel caps the
# value at net.core.somaxconn.
LISTEN_BACKLOG = 4096


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = ""
    shards: int = 4                     # partitions of kadence.requests, fixed per cluster
    task_partitions: int = 4            # partitions of kadence.tasks
    frontend_host: str = "127.0.0.1"
    frontend_port: int = 7233
    matching_host: str = "127.0.0.1"
    matching_port: int = 0              # 0: any free port
    session_timeout_ms: int = 10000     # Kafka consumer-group session timeout
    started_record_delay_ms: int = 1000  # how long the frontend holds a task's started record back
    # The largest payload (input, result, details, ...) one command may carry, in bytes of
    # JSON text: refused at the frontend (400) and dead-lettered by history (validation.py).
    max_payload_bytes: int = 2 * 1024 * 1024
    # How long a fetch may wait at the broker, per consumer. The development broker holds a
    # fetch for all of it even when records arrive, so these bound each hop's latency between
    # processes; with Apache Kafka (which answers as soon as there is data) they can be long.
    # `kadence dev` raises them: there the hops are handed over in process.
    history_fetch_wait_ms: int = 2      # kadence.requests
    matching_fetch_wait_ms: int = 10    # kadence.tasks
    replies_fetch_wait_ms: int = 10     # kadence.replies
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka_bootstrap": os.environ.get("KADENCE_KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            "database_url": os.environ.get("KADENCE_DATABASE_URL", ""),
            "shards": _env_int("KADENCE_SHARDS", cls.shards),
            "task_partitions": _env_int("KADENCE_TASK_PARTITIONS", cls.task_partitions),
            "frontend_host": os.environ.get("KADENCE_FRONTEND_HOST", cls.frontend_host),
            "frontend_port": _env_int("KADENCE_FRONTEND_PORT", cls.frontend_port),
            "matching_host": os.environ.get("KADENCE_MATCHING_HOST", cls.matching_host),
            "matching_port": _env_int("KADENCE_MATCHING_PORT", cls.matching_port),
            "session_timeout_ms": _env_int("KADENCE_SESSION_TIMEOUT_MS", cls.session_timeout_ms),
            "started_record_delay_ms": _env_int("KADENCE_STARTED_RECORD_DELAY_MS", cls.started_record_delay_ms),
            "max_payload_bytes": _env_int("KADENCE_MAX_PAYLOAD_BYTES", cls.max_payload_bytes),
            "history_fetch_wait_ms": _env_int("KADENCE_HISTORY_FETCH_WAIT_MS", cls.history_fetch_wait_ms),
            "matching_fetch_wait_ms": _env_int("KADENCE_MATCHING_FETCH_WAIT_MS", cls.matching_fetch_wait_ms),
            "replies_fetch_wait_ms": _env_int("KADENCE_REPLIES_FETCH_WAIT_MS", cls.replies_fetch_wait_ms),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
