"""``kadence encode`` (kadence/_tools_cli.py): the record it prints for the arguments it takes."""

from __future__ import annotations

import pytest

from kadence.cli import main
from kadence_protocol import avro


@pytest.mark.parametrize(("reuse", "conflict"), [("RejectDuplicate", "UseExisting"),
                                                  ("REJECT_DUPLICATE", "USE_EXISTING"),
                                                  ("reject_duplicate", "use_existing")])
def test_a_policy_is_taken_by_its_wire_name_or_the_sdk_enum_member_name(
        reuse: str, conflict: str, capsys: pytest.CaptureFixture[str]) -> None:
    # README, "Start policies", names them as WorkflowIDReusePolicy.REJECT_DUPLICATE and so on.
    assert main(["encode", "start", "--workflow-id", "w", "--workflow-type", "G", "--task-queue", "q",
                 "--id-reuse-policy", reuse, "--id-conflict-policy", conflict]) == 0
    _, record = avro.decode(bytes.fromhex(capsys.readouterr().out.strip()))
    assert (record["id_reuse_policy"], record["id_conflict_policy"]) == ("RejectDuplicate", "UseExisting")


def test_an_unknown_policy_is_a_usage_error_listing_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["encode", "start", "--workflow-id", "w", "--workflow-type", "G", "--task-queue", "q",
              "--id-reuse-policy", "Sometimes"])
    assert exited.value.code == 2
    assert "AllowDuplicateFailedOnly" in capsys.readouterr().err
