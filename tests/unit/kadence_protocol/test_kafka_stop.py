"""stop_consumer (kadence_protocol/kafka_stop.py) without a broker: whatever a part of the
consumer raises while its broker is gone, the stop closes the rest and does not raise it (the
real broker's cases are in tests/e2e/test_stops_leave_nothing.py)."""

from __future__ import annotations

import asyncio

import pytest

from kadence_protocol.kafka_stop import STOP_WAIT_S, broker_gone, stop_consumer

pytestmark = pytest.mark.timeout(10)


class Client:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        if self.error is not None:
            raise self.error


class Consumer:
    """What stop_consumer reaches of an aiokafka consumer whose broker is gone."""

    def __init__(self, stop_error: BaseException, close_error: BaseException | None) -> None:
        self.stop_error = stop_error
        self._client = Client(close_error)
        self._coordinator = None
        self._fetcher = None

    async def stop(self) -> None:
        raise self.stop_error


async def test_an_error_of_the_client_s_close_does_not_end_the_stop_in_a_traceback() -> None:
    # Seen in `kadence dev` after its broker was killed: the client's metadata task wrote on a
    # connection uvloop had closed, and its close re-raised that RuntimeError out of the stop.
    consumer = Consumer(asyncio.CancelledError(),
                        RuntimeError("unable to perform operation on <TCPTransport closed=True>"))
    await stop_consumer(consumer)
    assert consumer._client.closed


async def test_a_fault_of_the_stop_itself_is_raised_once_the_client_is_closed() -> None:
    consumer = Consumer(RuntimeError("handler is closed"), RuntimeError("closed"))
    with pytest.raises(RuntimeError, match="handler is closed"):
        await stop_consumer(consumer)
    assert consumer._client.closed


async def test_the_caller_s_own_cancellation_is_still_raised() -> None:
    consumer = Consumer(asyncio.CancelledError(), RuntimeError("closed"))

    async def stopping() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)  # the cancel lands here: the task is cancelling from now on
        except asyncio.CancelledError:
            await stop_consumer(consumer)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.get_running_loop().create_task(stopping())
    assert consumer._client.closed


class Leaving(Consumer):
    """A group member whose stop waits to leave its group, as with its broker gone."""

    def __init__(self) -> None:
        super().__init__(RuntimeError("unused"), None)
        self.closed = False

    async def stop(self) -> None:
        self.closed = True  # as aiokafka's stop() marks it before its first wait
        await asyncio.sleep(60)


async def test_with_the_broker_known_gone_the_stop_waits_for_nothing_and_closes_the_client() -> None:
    consumer = Leaving()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with broker_gone():
        await stop_consumer(consumer)
    assert loop.time() - began < STOP_WAIT_S / 4
    assert consumer.closed and consumer._client.closed
