"""Where a shard taken over resumes (services/history/resume.py): never at 0 on a guess."""

from __future__ import annotations

from services.history.resume import Resume, resume_from


def test_a_log_end_below_the_stored_offset_is_no_reason_to_rewind() -> None:
    # The development broker reports the base offset of its last batch + 1 as the end.
    assert resume_from(120, 101, fresh_broker=False, rewind_lost=False) is Resume.STORED
    assert resume_from(120, 500, fresh_broker=False, rewind_lost=False) is Resume.STORED


def test_only_a_fresh_broker_or_the_operator_rewinds() -> None:
    assert resume_from(120, 0, fresh_broker=True, rewind_lost=False) is Resume.FRESH
    assert resume_from(120, 101, fresh_broker=False, rewind_lost=True) is Resume.REWIND
    # Told to rewind lost partitions, a partition that lost nothing still resumes.
    assert resume_from(120, 120, fresh_broker=False, rewind_lost=True) is Resume.STORED


def test_the_operator_flag_is_read_from_the_environment(monkeypatch) -> None:
    from services.common.config import Settings

    for value, wanted in (("", False), ("0", False), ("false", False), ("1", True), ("true", True)):
        monkeypatch.setenv("KADENCE_REWIND_LOST_PARTITIONS", value)
        assert Settings.from_env().rewind_lost_partitions is wanted
