"""Stopping an aiokafka consumer so that nothing of it keeps running: every consumer of Kadence,
the SDK's and the services', stops through :func:`stop_consumer`.

aiokafka's ``AIOKafkaConsumer.stop()`` marks the consumer closed, then closes its group
coordinator, its fetcher and its client in turn. With its broker gone, the fetcher's close
re-raises the cancellation of a fetch that was waiting to retry that broker: the stop raises
``CancelledError`` before the client is closed, and the client's metadata task then retries
the dead broker for as long as the event loop runs (another ``stop()`` does nothing, the
consumer being marked closed). Whoever stopped it saw a cancellation it never asked for, and
what it meant to stop after the consumer was left running too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterator

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

__all__ = ["broker_gone", "stop_consumer"]

log = logging.getLogger(__name__)

# A group member's stop first waits for its group work under way (a join, which the broker may
# hold up to the rebalance timeout) and asks to leave the group: with the broker gone, that is
# up to the client's request timeout (40 s). A stop must end: past this, what is left is closed.
STOP_WAIT_S = 10.0
# Set within broker_gone(): the broker is known to have died, so that wait cannot end well.
_BROKER_GONE: contextvars.ContextVar[bool] = contextvars.ContextVar("kadence_broker_gone", default=False)


@contextlib.contextmanager
def broker_gone() -> Iterator[None]:
    """Within this (and tasks started within it), :func:`stop_consumer` does not wait for a
    consumer's stop: its broker is known to be gone (``kadence dev``'s broker child died), so
    leaving the group cannot succeed and waiting :data:`STOP_WAIT_S` for it only delays the exit.
    The consumer's parts are closed all the same."""
    token = _BROKER_GONE.set(True)
    try:
        yield
    finally:
        _BROKER_GONE.reset(token)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop ``consumer`` and every part of it, also when its broker is gone, within about
    :data:`STOP_WAIT_S` (at once within :func:`broker_gone`). The caller's own cancellation,
    or an error of the stop that is not Kafka's, is raised once the parts are closed; a Kafka
    error of the stop, an error of a part closed after it, or a stop cut short, is logged."""
    own: BaseException | None = None  # raised at the end: the caller's cancellation, a fault of stop()
    wait = 0.0 if _BROKER_GONE.get() else STOP_WAIT_S
    try:
        # stop() marks the consumer closed before its first wait: cut short there, the parts
        # are closed below.
        async with asyncio.timeout(wait):
            await consumer.stop()
        return
    except TimeoutError:
        reason = "its broker is gone" if wait == 0 else f"it did not end within {wait:g} s"
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:
            own = exc
        reason = "its broker is gone"
    except KafkaError as exc:
        reason = repr(exc)
    except Exception as exc:  # noqa: BLE001 - raised below, once the parts are closed
        own, reason = exc, repr(exc)
    # What stop() did not reach: the group coordinator's heartbeat and offset refresh, the
    # fetcher if its loop still runs, and the client. Each only cancels tasks and closes
    # connections (short), and is harmless on what is closed already.
    # These are aiokafka's private parts (0.11-0.14): looked up with getattr, so that a
    # release that renames one skips that step instead of failing the stop.
    coordinator = getattr(consumer, "_coordinator", None)
    for name in ("_stop_heartbeat_task", "_stop_commit_offsets_refresh_task"):  # a group member's
        stop_task = getattr(coordinator, name, None)
        if stop_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stop_task()
    fetcher = getattr(consumer, "_fetcher", None)
    fetch_task = getattr(fetcher, "_fetch_task", None)
    if fetcher is not None and fetch_task is not None and not fetch_task.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fetcher.close()
    client = getattr(consumer, "_client", None)
    if client is not None:
        # Its metadata task may end in an error of its own (uvloop's RuntimeError for a write
        # on a connection the broker closed), which the close re-raises: closed all the same.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await client.close()
    if own is not None:
        raise own
    log.info("a Kafka consumer's stop was cut short (%s); its client is closed", reason)
