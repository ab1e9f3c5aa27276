"""Queries every workflow answers without user code (the SDK's worker answers them)."""

# The await points of each coroutine of a waiting run, as text (kadence/_workflow/stack.py).
STACK_TRACE_QUERY = "__stack_trace"
