"""The click CLIs send ``--api-key`` (or ``KADENCE_API_KEY``) the same way, and a task
queue's description needs the read permission: against a frontend with authentication on."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner, Result

from kadence._admin_cli import cli as admin_group
from kadence._cli.task_queue import task_queue as task_queue_group
from services.cluster import Cluster

from .test_auth import secured

pytestmark = pytest.mark.timeout(90)
__all__ = ["secured"]  # the fixture, shared with test_auth.py


async def _invoke(group: object, cluster: Cluster, *args: str, key: str | None = None) -> Result:
    env = {"KADENCE_ADDRESS": cluster.url, "KADENCE_NAMESPACE": "default", "KADENCE_API_KEY": key or ""}
    return await asyncio.to_thread(CliRunner().invoke, group, list(args), env=env)


async def test_the_admin_and_task_queue_commands_send_their_credential(secured: Cluster) -> None:
    refused = await _invoke(admin_group, secured, "namespace", "create", "shop", "--retention", "7d")
    assert refused.exit_code == 1 and "Unauthenticated" in refused.output
    created = await _invoke(admin_group, secured, "namespace", "create", "shop", "--retention", "7d",
                            "--api-key", "ops-key")
    assert created.exit_code == 0, created.output
    listed = await _invoke(admin_group, secured, "namespace", "list", "-o", "json", key="ops-key")
    assert listed.exit_code == 0 and '"shop"' in listed.output

    described = await _invoke(task_queue_group, secured, "-n", "shop", "describe", "orders", key="shop-app-key")
    assert described.exit_code == 0, described.output
    assert "Task queue orders in namespace shop" in described.output
    # A worker's grant polls the queue but does not read it.
    denied = await _invoke(task_queue_group, secured, "describe", "orders", "-n", "shop", key="shop-worker-key")
    assert denied.exit_code == 1 and "PermissionDenied" in denied.output
