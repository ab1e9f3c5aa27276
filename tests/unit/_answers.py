"""History's operations on workers' answers, called with a decoded command (a dict) as the
shard calls them: each handler makes the operation's record (``requests.typed``) first, so a
test's dict goes through the same ``from_dict`` as a command off ``kadence.requests``."""

from __future__ import annotations

from services.history.shard import HANDLERS

workflow_task_started = HANDLERS["RecordWorkflowTaskStarted"]
workflow_task_completed = HANDLERS["RespondWorkflowTaskCompleted"]
workflow_task_failed = HANDLERS["RespondWorkflowTaskFailed"]
activity_started = HANDLERS["RecordActivityTaskStarted"]
activity_completed = HANDLERS["RespondActivityTaskCompleted"]
activity_failed = HANDLERS["RespondActivityTaskFailed"]
activity_heartbeat = HANDLERS["RecordActivityTaskHeartbeat"]
activity_canceled = HANDLERS["RespondActivityTaskCanceled"]
