"""Service settings, read once from the environment (``KADENCE_*``)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from kadence_protocol.kafka_security import KafkaSecurity

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


def _env_chosen_int(name: str) -> int | None:
    """An integer setting that may be left unset (None), told apart from any value chosen."""
    raw = os.environ.get(name)
    return None if raw is None or raw == "" else _env_int(name, 0)


def _env_bool(name: str) -> bool:
    """A switch: 1/true/yes (any case) on; unset, empty, 0/false/no off."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def settings_or_exit(program: str) -> Settings:
    """``Settings.from_env()`` for a program starting: a variable it cannot read (a port
    that is not a number, a bad Kafka security setting) ends the program with one line
    naming it, rather than a traceback."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise SystemExit(f"{program}: {exc}") from None


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
    # How long a fetch may wait at the broker, per consumer; None: not chosen, so the wait
    # follows how the hop is carried (services/common/fetch_waits.py), and a wait set to what
    # happens to be a default is still kept as chosen.
    history_fetch_wait_ms: int | None = None      # kadence.requests
    matching_fetch_wait_ms: int | None = None     # kadence.tasks
    replies_fetch_wait_ms: int | None = None      # kadence.replies
    # Task-token HMAC keys, comma-separated, the first signs (services/frontend/tokens.py);
    # empty: a frontend in a test or `kadence dev` cluster makes one up for its life.
    task_token_keys: str = ""
    # The authentication configuration file (KADENCE_AUTH_CONFIG); see services/frontend/auth.py.
    auth_config: str = ""
    # Serve the API on a non-loopback address without authentication (KADENCE_INSECURE=1).
    insecure: bool = False
    # History: re-read from 0 a partition whose log end is below the stored offset (a
    # broker that lost data; see services/history/resume.py), how long applied request ids
    # are kept, and the byte budgets of the events kept in memory per run and per shard.
    rewind_lost_partitions: bool = False
    request_id_retention_s: int = 86_400
    history_tail_run_bytes: int = 1 << 20
    history_tail_shard_bytes: int = 64 << 20
    # Namespaces and schedules (services/common/namespaces.py, services/history/retention.py,
    # services/history/scheduler.py): the shortest retention a namespace may be given, how
    # often the retention job and the scheduler look, and how many runs one deletion takes.
    min_retention_ms: int = 60_000
    retention_interval_ms: int = 60_000
    retention_batch: int = 500
    scheduler_interval_ms: int = 1_000
    # A history shard retrying through an outage this long is reported stalled (/health 503).
    stall_after_ms: int = 10_000
    # A history process on its own serves GET /health here when set (0: any free port), and
    # its command notices endpoint on this host (any free port unless set).
    history_health_host: str = "127.0.0.1"
    history_health_port: int | None = None
    # The signed-ingress policy file (KADENCE_INGRESS_KEYS; services/common/ingress_auth.py).
    ingress_keys: str = ""
    # The shared key of matching's internal API and the metrics endpoint (KADENCE_INTERNAL_KEY;
    # services/common/internal_auth.py); empty: they must listen on loopback.
    internal_key: str = field(default="", repr=False)
    # TLS/SASL of every Kafka client (KADENCE_KAFKA_SECURITY_PROTOCOL, ...: kadence_protocol/kafka_security.py).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # History limits of one run (services/history/limits.py): past a warning threshold the
    # workflow is told to continue as new, past a terminate threshold the run is terminated.
    history_warn_events: int = 10_000
    history_terminate_events: int = 50_000
    history_warn_bytes: int = 10 << 20
    history_terminate_bytes: int = 50 << 20
    # Services in one process (`kadence dev`) hand commands, tasks and replies to each other
    # instead of through the broker (services/common/colocation.py); KADENCE_COLOCATE=0 sends
    # everything through the broker, as between processes (bisecting, benchmarking).
    colocate: bool = True
    # History tells matching in another process of the tasks it published, so a waiting poll
    # gets its task without matching's fetch wait (services/history/notices.py, a hint only);
    # KADENCE_TASK_NOTICES=0 leaves every task to the fetch.
    task_notices: bool = True
    # The frontend tells history in another process of each command the broker acknowledged,
    # so the shard takes it without history's fetch wait (services/common/command_notices.py,
    # a hint only); KADENCE_COMMAND_NOTICES=0 leaves every command to the fetch.
    command_notices: bool = True
    # History tells the frontend in another process of the replies it published to it, so a
    # command's answer does not wait for the reply consumer's fetch (services/common/reply_notices.py,
    # a hint only), at the frontend's internal address on frontend_internal_host (any free port);
    # KADENCE_REPLY_NOTICES=0 leaves every reply to the fetch.
    reply_notices: bool = True
    frontend_internal_host: str = "127.0.0.1"
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
            "history_fetch_wait_ms": _env_chosen_int("KADENCE_HISTORY_FETCH_WAIT_MS"),
            "matching_fetch_wait_ms": _env_chosen_int("KADENCE_MATCHING_FETCH_WAIT_MS"),
            "replies_fetch_wait_ms": _env_chosen_int("KADENCE_REPLIES_FETCH_WAIT_MS"),
            "task_token_keys": os.environ.get("KADENCE_TASK_TOKEN_KEYS", ""),
            "auth_config": os.environ.get("KADENCE_AUTH_CONFIG", ""),
            "insecure": _env_bool("KADENCE_INSECURE"),
            "rewind_lost_partitions": _env_bool("KADENCE_REWIND_LOST_PARTITIONS"),
            "request_id_retention_s": _env_int("KADENCE_REQUEST_ID_RETENTION_S", cls.request_id_retention_s),
            "history_tail_run_bytes": _env_int("KADENCE_HISTORY_TAIL_RUN_BYTES", cls.history_tail_run_bytes),
            "history_tail_shard_bytes": _env_int("KADENCE_HISTORY_TAIL_SHARD_BYTES", cls.history_tail_shard_bytes),
            "min_retention_ms": _env_int("KADENCE_MIN_RETENTION_MS", cls.min_retention_ms),
            "retention_interval_ms": _env_int("KADENCE_RETENTION_INTERVAL_MS", cls.retention_interval_ms),
            "retention_batch": _env_int("KADENCE_RETENTION_BATCH", cls.retention_batch),
            "scheduler_interval_ms": _env_int("KADENCE_SCHEDULER_INTERVAL_MS", cls.scheduler_interval_ms),
            "stall_after_ms": _env_int("KADENCE_STALL_AFTER_MS", cls.stall_after_ms),
            "history_health_host": os.environ.get("KADENCE_HISTORY_HEALTH_HOST", cls.history_health_host),
            "history_health_port": _env_chosen_int("KADENCE_HISTORY_HEALTH_PORT"),
            "kafka_security": KafkaSecurity.from_env(),
            "ingress_keys": os.environ.get("KADENCE_INGRESS_KEYS", ""),
            "internal_key": os.environ.get("KADENCE_INTERNAL_KEY", ""),
            "history_warn_events": _env_int("KADENCE_HISTORY_WARN_EVENTS", cls.history_warn_events),
            "history_terminate_events": _env_int("KADENCE_HISTORY_TERMINATE_EVENTS", cls.history_terminate_events),
            "history_warn_bytes": _env_int("KADENCE_HISTORY_WARN_BYTES", cls.history_warn_bytes),
            "history_terminate_bytes": _env_int("KADENCE_HISTORY_TERMINATE_BYTES", cls.history_terminate_bytes),
            "task_notices": os.environ.get("KADENCE_TASK_NOTICES", "1").strip().lower() not in ("0", "false", "no"),
            "reply_notices": os.environ.get("KADENCE_REPLY_NOTICES", "1").strip().lower() not in ("0", "false", "no"),
            "frontend_internal_host": os.environ.get("KADENCE_FRONTEND_INTERNAL_HOST", cls.frontend_internal_host),
            "command_notices": os.environ.get("KADENCE_COMMAND_NOTICES", "1").strip().lower() not in ("0", "false",
                                                                                                     "no"),
            "colocate": os.environ.get("KADENCE_COLOCATE", "1").strip().lower() not in ("0", "false", "no"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
