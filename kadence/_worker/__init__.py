"""The worker: pollers, the workflow-task processor (with its cache) and the activity runner."""
