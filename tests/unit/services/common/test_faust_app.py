"""faust_app.App: the hooks it overrides in faust are still the ones faust calls, so its
consumer thread (the one that reads past an unreadable record) is the one the app fetches with.
The reading past itself is tested on a real broker (tests/e2e/test_visibility_stream.py)."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
from faust.transport.drivers import aiokafka as driver

from services.common import faust_app
from services.history.audit.stream import create_app as audit_app
from services.visibility.stream import create_app as visibility_app

pytestmark = pytest.mark.timeout(10)


def test_the_app_fetches_through_the_thread_that_isolates_unreadable_records(tmp_path: Path) -> None:
    app = faust_app.App("t", broker="kafka://127.0.0.1:1", datadir=str(tmp_path), web_enabled=False,
                        store="memory://")
    assert isinstance(app.transport, faust_app._Transport)
    assert app.transport.Consumer is faust_app._Consumer
    # What the overrides replace is still there to be replaced (a faust upgrade may move it);
    # the consumer itself is not made here: its thread brings an event loop of its own.
    for cls, name in ((faust.App, "_new_transport"), (driver.Consumer, "_new_consumer_thread"),
                      (driver.AIOKafkaConsumerThread, "_fetch_records")):
        assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name}"


def test_both_stream_apps_are_kadences(tmp_path: Path) -> None:
    assert isinstance(visibility_app("127.0.0.1:1", "postgresql://unused", datadir=str(tmp_path / "v")),
                      faust_app.App)
    assert isinstance(audit_app("127.0.0.1:1", datadir=str(tmp_path / "a"))[0], faust_app.App)
