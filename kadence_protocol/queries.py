"""Queries every workflow answers without user code (the SDK's worker answers them)."""

# The await points of each coroutine of a waiting run, as text (kadence/_workflow/stack.py).
STACK_TRACE_QUERY = "__stack_trace"
# The update name a client asks with when it waits for an update it knows by id alone
# (WorkflowHandle.get_update_handle): history answers a known id whatever the name, and a
# worker refuses the name itself (UpdateNotFound), so asking never runs an update.
UPDATE_RESULT_NAME = "__update_result"
# The signal a parent's workflow task sends its child when the code awaiting the child was
# cancelled: the child's shard records a cancel request on the child instead of a signal
# (services/history/children.py), so no new command or event kind is needed.
CANCEL_CHILD_SIGNAL = "__cancel_child"
