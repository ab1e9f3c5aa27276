"""Service settings, read once from the environment (``KADENCE_*``)."""

from __future__ import annotations

import dataclasses
import enum
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


def _in_range(name: str, value: int, low: int, high: int | None) -> int:
    """``value`` if ``low <= value <= high``; else the error naming the variable (a count of 0,
    a negative interval or a port past 65535 would start a service that cannot work)."""
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if value > _LARGEST:  # would overflow where it becomes seconds (a float) or a timeout
        raise ValueError(f"{name} must be at most {_LARGEST}, got a number of {len(str(value))} digits")
    return value


_LARGEST = 2**53  # every integer up to it is exact as a float

# KADENCE_REPLY_TIMEOUT_MS's range. Above 20 s, a command's answer bound (15 s for the broker
# plus this) would leave less than 10 s of the SDK's shortest call timeout (45 s: a start
# that waits 30 s for its outcome) for the HTTP exchange (docs/protocol.md, "Answer bound");
# below 1 s, a busy but healthy history would have most commands answered 503 and resent.
REPLY_TIMEOUT_MS_BOUNDS = (1_000, 20_000)


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
    read_timeout_ms: int = 5000  # a frontend read PostgreSQL has not answered by then is a 503
    # How long the frontend waits for history's reply to a command before answering 503 Busy.
    reply_timeout_ms: int = 15_000
    # The frontend's PostgreSQL connections (0: 10; in `kadence dev`, 12, shared with matching).
    frontend_pool_size: int = 0
    # A command waiting this long while no reply at all came in makes the frontend's /health
    # degraded (services/frontend/replies.py).
    health_unanswered_ms: int = 10_000
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
    # How often history deletes the kadence.requests records its shards have applied, and how
    # long after a shard moved past a record it goes (services/history/trim.py); 0: never.
    trim_interval_s: int = 60
    trim_keep_s: int = 600
    # Each frontend process's limits per namespace (services/frontend/quotas.py), unless the
    # namespace's own override says otherwise; 0: no limit. The request rate sits well above a
    # busy tenant's (the benchmarks run ~1,000 workflows/s in one namespace).
    namespace_rps: int = 5000
    namespace_concurrent_polls: int = 2000
    namespace_visibility_rps: int = 200
    # Worker answers (task answers, heartbeats, query answers): a rate of their own, far above
    # the API's, so a tenant's flood of starts never slows its workers, while one running
    # activity's token cannot write to kadence.requests (shared by every namespace) unbounded.
    namespace_answer_rps: int = 20000
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
    # How long past its fire time history holds a user timer whose worker runs it ahead
    # (services/history/timer_ahead.py; decision 0014 says why 3 s); 0: history fires it on
    # time, racing the worker.
    timer_ahead_grace_ms: int = 3000
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
        values: dict[str, object] = {setting.field: setting.read() for setting in ENV_SETTINGS}
        values["kafka_security"] = KafkaSecurity.from_env()
        values.update({k: v for k, v in overrides.items() if v is not None})
        # Checked with the rest, not first where a service binds: there it was a traceback.
        from services.common.internal_auth import check_key

        check_key(str(values["internal_key"]))
        return cls(**values)  # type: ignore[arg-type]


# ---- the environment variables ------------------------------------------------------------------
# One row per variable: Settings.from_env reads them from here, and each service's --help
# (services/common/usage.py) lists them from here, so the two cannot drift apart.


class EnvKind(enum.Enum):
    """How a variable's text becomes a setting."""

    TEXT = "text"            # as given (unset: the default)
    INT = "int"              # an integer (unset or empty: the default)
    CHOSEN_INT = "chosen"    # an integer, or None when unset or empty (not chosen)
    SWITCH = "switch"        # off unless 1/true/yes (any case)
    SWITCH_ON = "switch-on"  # on unless 0/false/no (any case)


class Reader(enum.Enum):
    """A service run on its own (``python -m services.<value>``) that reads a variable."""

    HISTORY = "history"
    MATCHING = "matching"
    FRONTEND = "frontend"


@dataclass(frozen=True)
class EnvSetting:
    """A ``KADENCE_*`` variable, the :class:`Settings` field it sets and the services that read it
    (none: only ``kadence dev``, which reads every one)."""

    name: str
    field: str
    kind: EnvKind
    readers: frozenset[Reader]
    help: str
    low: int = 0             # an integer's smallest value
    high: int | None = None  # and its largest (None: no bound)

    def default(self) -> object:
        found = next(f for f in dataclasses.fields(Settings) if f.name == self.field)
        return found.default

    def read(self) -> object:
        default = self.default()
        match self.kind:
            case EnvKind.TEXT:
                return os.environ.get(self.name, default)
            case EnvKind.INT:
                assert isinstance(default, int)
                return _in_range(self.name, _env_int(self.name, default), self.low, self.high)
            case EnvKind.CHOSEN_INT:
                chosen = _env_chosen_int(self.name)
                return None if chosen is None else _in_range(self.name, chosen, self.low, self.high)
            case EnvKind.SWITCH:
                return _env_bool(self.name)
            case EnvKind.SWITCH_ON:
                return os.environ.get(self.name, "1").strip().lower() not in ("0", "false", "no")

    def default_text(self) -> str:
        """The default as a person would write it in the variable."""
        default = self.default()
        if self.kind is EnvKind.SWITCH:
            return "0"
        if self.kind is EnvKind.SWITCH_ON:
            return "1"
        if default is None or default == "":
            return "unset"
        return str(default)


_H, _M, _F = frozenset({Reader.HISTORY}), frozenset({Reader.MATCHING}), frozenset({Reader.FRONTEND})
_HM, _HF, _ALL, _DEV = _H | _M, _H | _F, _H | _M | _F, frozenset[Reader]()

ENV_SETTINGS: tuple[EnvSetting, ...] = (
    EnvSetting("KADENCE_KAFKA_BOOTSTRAP", "kafka_bootstrap", EnvKind.TEXT, _ALL, "the Kafka brokers, host:port[,...]"),
    EnvSetting("KADENCE_DATABASE_URL", "database_url", EnvKind.TEXT, _ALL, "the PostgreSQL DSN (required)"),
    EnvSetting("KADENCE_SHARDS", "shards", EnvKind.INT, _HF, "partitions of kadence.requests, fixed per cluster",
               low=1),
    EnvSetting("KADENCE_TASK_PARTITIONS", "task_partitions", EnvKind.INT, _ALL, "partitions of kadence.tasks", low=1),
    EnvSetting("KADENCE_FRONTEND_HOST", "frontend_host", EnvKind.TEXT, _F, "the frontend's HTTP address"),
    EnvSetting("KADENCE_FRONTEND_PORT", "frontend_port", EnvKind.INT, _F, "the frontend's HTTP port", high=65535),
    EnvSetting("KADENCE_MATCHING_HOST", "matching_host", EnvKind.TEXT, _M, "matching's internal API address"),
    EnvSetting("KADENCE_MATCHING_PORT", "matching_port", EnvKind.INT, _M, "matching's internal API port (0: any free)",
               high=65535),
    EnvSetting("KADENCE_SESSION_TIMEOUT_MS", "session_timeout_ms", EnvKind.INT, _HM,
               "Kafka consumer-group session timeout", low=1),
    EnvSetting("KADENCE_STARTED_RECORD_DELAY_MS", "started_record_delay_ms", EnvKind.INT, _F,
               "how long the frontend holds a task's started record back"),
    EnvSetting("KADENCE_READ_TIMEOUT_MS", "read_timeout_ms", EnvKind.INT, _F,
               "how long a frontend read (describe, history, list) waits for PostgreSQL before a 503",
               low=1),
    EnvSetting("KADENCE_REPLY_TIMEOUT_MS", "reply_timeout_ms", EnvKind.INT, _F,
               "how long a command waits for history's reply before a 503 (Busy, come back with the same"
               " request id)", low=REPLY_TIMEOUT_MS_BOUNDS[0], high=REPLY_TIMEOUT_MS_BOUNDS[1]),
    EnvSetting("KADENCE_FRONTEND_POOL_SIZE", "frontend_pool_size", EnvKind.INT, _F,
               "the frontend's PostgreSQL connections (0: 10; in kadence dev 12, shared with matching)"),
    EnvSetting("KADENCE_HEALTH_UNANSWERED_MS", "health_unanswered_ms", EnvKind.INT, _F,
               "a command unanswered this long, with no reply at all meanwhile, makes /health degraded",
               low=1),
    EnvSetting("KADENCE_MAX_PAYLOAD_BYTES", "max_payload_bytes", EnvKind.INT, _HF,
               "the largest payload one command may carry (bytes of JSON)", low=1),
    EnvSetting("KADENCE_HISTORY_FETCH_WAIT_MS", "history_fetch_wait_ms", EnvKind.CHOSEN_INT, _H,
               "broker fetch wait on kadence.requests (unset: by how the hop is carried)"),
    EnvSetting("KADENCE_MATCHING_FETCH_WAIT_MS", "matching_fetch_wait_ms", EnvKind.CHOSEN_INT, _M,
               "broker fetch wait on kadence.tasks (unset: by how the hop is carried)"),
    EnvSetting("KADENCE_REPLIES_FETCH_WAIT_MS", "replies_fetch_wait_ms", EnvKind.CHOSEN_INT, _F,
               "broker fetch wait on kadence.replies (unset: by how the hop is carried)"),
    EnvSetting("KADENCE_TASK_TOKEN_KEYS", "task_token_keys", EnvKind.TEXT, _F,
               "task-token HMAC keys, comma-separated, the first signs (frontend: required)"),
    EnvSetting("KADENCE_AUTH_CONFIG", "auth_config", EnvKind.TEXT, _F, "the authentication configuration file"),
    EnvSetting("KADENCE_INSECURE", "insecure", EnvKind.SWITCH, _ALL,
               "serve the API beyond loopback without authentication"),
    EnvSetting("KADENCE_REWIND_LOST_PARTITIONS", "rewind_lost_partitions", EnvKind.SWITCH, _H,
               "re-read from 0 a partition whose log end is below the stored offset"),
    EnvSetting("KADENCE_REQUEST_ID_RETENTION_S", "request_id_retention_s", EnvKind.INT, _H,
               "how long applied request ids are kept"),
    EnvSetting("KADENCE_HISTORY_TAIL_RUN_BYTES", "history_tail_run_bytes", EnvKind.INT, _H,
               "bytes of events kept in memory per run"),
    EnvSetting("KADENCE_HISTORY_TAIL_SHARD_BYTES", "history_tail_shard_bytes", EnvKind.INT, _H,
               "bytes of events kept in memory per shard"),
    EnvSetting("KADENCE_MIN_RETENTION_MS", "min_retention_ms", EnvKind.INT, _F,
               "the shortest retention a namespace may be given"),
    EnvSetting("KADENCE_NAMESPACE_RPS", "namespace_rps", EnvKind.INT, _F,
               "user API calls a second per namespace per frontend, unless the namespace sets its own (0: no limit)"),
    EnvSetting("KADENCE_NAMESPACE_CONCURRENT_POLLS", "namespace_concurrent_polls", EnvKind.INT, _F,
               "long polls open at once per namespace per frontend, unless the namespace sets its own (0: no limit)"),
    EnvSetting("KADENCE_NAMESPACE_VISIBILITY_RPS", "namespace_visibility_rps", EnvKind.INT, _F,
               "list and count queries a second per namespace per frontend, unless the namespace sets its own"
               " (0: no limit)"),
    EnvSetting("KADENCE_NAMESPACE_ANSWER_RPS", "namespace_answer_rps", EnvKind.INT, _F,
               "worker answers (task answers, heartbeats, query answers) a second per namespace per frontend"
               " (0: no limit)"),
    EnvSetting("KADENCE_RETENTION_INTERVAL_MS", "retention_interval_ms", EnvKind.INT, _H,
               "how often the retention job looks", low=1),
    EnvSetting("KADENCE_RETENTION_BATCH", "retention_batch", EnvKind.INT, _H, "how many runs one deletion takes",
               low=1),
    EnvSetting("KADENCE_SCHEDULER_INTERVAL_MS", "scheduler_interval_ms", EnvKind.INT, _H,
               "how often the scheduler looks", low=1),
    EnvSetting("KADENCE_TRIM_INTERVAL_S", "trim_interval_s", EnvKind.INT, _H,
               "how often applied kadence.requests records are deleted (DeleteRecords; 0: never)"),
    EnvSetting("KADENCE_TRIM_KEEP_S", "trim_keep_s", EnvKind.INT, _H,
               "how long an applied kadence.requests record is kept before it is deleted"),
    EnvSetting("KADENCE_STALL_AFTER_MS", "stall_after_ms", EnvKind.INT, _H,
               "a shard retrying this long is reported stalled (/health 503)"),
    EnvSetting("KADENCE_HISTORY_HEALTH_HOST", "history_health_host", EnvKind.TEXT, _H,
               "history's /health and command-notices address"),
    EnvSetting("KADENCE_HISTORY_HEALTH_PORT", "history_health_port", EnvKind.CHOSEN_INT, _H,
               "history's /health port (unset: no /health; 0: any free)", high=65535),
    EnvSetting("KADENCE_INGRESS_KEYS", "ingress_keys", EnvKind.TEXT, _HF, "the signed-ingress policy file"),
    EnvSetting("KADENCE_INTERNAL_KEY", "internal_key", EnvKind.TEXT, _ALL,
               "shared key of internal APIs and metrics (unset: loopback only)"),
    EnvSetting("KADENCE_HISTORY_WARN_EVENTS", "history_warn_events", EnvKind.INT, _H,
               "events of a run past which it is told to continue as new"),
    EnvSetting("KADENCE_HISTORY_TERMINATE_EVENTS", "history_terminate_events", EnvKind.INT, _H,
               "events of a run past which it is terminated"),
    EnvSetting("KADENCE_HISTORY_WARN_BYTES", "history_warn_bytes", EnvKind.INT, _H,
               "history bytes of a run past which it is told to continue as new"),
    EnvSetting("KADENCE_HISTORY_TERMINATE_BYTES", "history_terminate_bytes", EnvKind.INT, _H,
               "history bytes of a run past which it is terminated"),
    EnvSetting("KADENCE_TIMER_AHEAD_GRACE_MS", "timer_ahead_grace_ms", EnvKind.INT, _H,
               "ms history holds a user timer past its fire time for the worker that runs it ahead"),
    EnvSetting("KADENCE_TASK_NOTICES", "task_notices", EnvKind.SWITCH_ON, _HM,
               "history tells matching of the tasks it published (a hint)"),
    EnvSetting("KADENCE_REPLY_NOTICES", "reply_notices", EnvKind.SWITCH_ON, _HF,
               "history tells the frontend of the replies it published (a hint)"),
    EnvSetting("KADENCE_FRONTEND_INTERNAL_HOST", "frontend_internal_host", EnvKind.TEXT, _F,
               "the frontend's internal address (reply notices)"),
    EnvSetting("KADENCE_COMMAND_NOTICES", "command_notices", EnvKind.SWITCH_ON, _HF,
               "the frontend tells history of each command acknowledged (a hint)"),
    EnvSetting("KADENCE_COLOCATE", "colocate", EnvKind.SWITCH_ON, _DEV,
               "services in one process hand work to each other, not through the broker"),
)
