"""Queries every workflow answers without user code (the SDK's worker answers them)."""

# The await points of each coroutine of a waiting run, as text (kadence/_workflow/stack.py).
STACK_TRACE_QUERY = "__stack_trace"
# The update name a client asks with when it waits for an update it knows by id alone
# (WorkflowHandle.get_update_handle): history answers a known id whatever the name, and a
# worker refuses the name itself (UpdateNotFound), so asking never runs an update.
UPDATE_RESULT_NAME = "__update_result"
