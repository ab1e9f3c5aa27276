"""The worker's answer batches stay under the frontend's request limit, a 413 never loses an
answer, and an answer that alone is over the limit fails its task clearly. Against a real
local aiohttp server with a small body limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from kadence._http import HttpTransport
from kadence._retry import Backoff
from kadence._worker.answers import AnswerBatcher
from kadence.exceptions import RPCError

pytestmark = pytest.mark.timeout(60)

ROOT = "/api/v1/namespaces/default"
LIMIT = 64 * 1024
RETRY = Backoff(attempts=0, within=5, first=0.01, cap=0.05)


@dataclass
class Frontend:
    """Takes task answers like the frontend does, with aiohttp's body limit doing the 413s."""

    sizes: list[int] = field(default_factory=list)  # bodies taken
    refused: int = 0
    got: dict[str, list[Any]] = field(default_factory=dict)
    busy: frozenset[str] = frozenset()  # task tokens a batch answers 503 on their own line
    busy_wait_ms: int = 0  # the retry_after_ms of those lines
    times: dict[str, list[float]] = field(default_factory=dict)  # by task token: when each came

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPRequestEntityTooLarge:
            self.refused += 1
            return web.json_response({"error": "RequestEntityTooLarge", "message": "too large"}, status=413)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.sizes.append(len(raw))
        body = await request.json()
        path = request.path.removeprefix(ROOT)
        now = asyncio.get_running_loop().time()
        if path == "/task-answers":
            results = []
            for a in body["answers"]:
                self.times.setdefault(a["body"]["task_token"], []).append(now)
                if a["body"]["task_token"] in self.busy:
                    results.append({"status": 503, "error": "Unavailable", "message": "the broker is unavailable",
                                    "retry_after_ms": self.busy_wait_ms})
                    continue
                self.got.setdefault(a["operation"], []).append(a["body"])
                results.append({"status": 200, "answer": {}})
            return web.json_response({"results": results})
        self.times.setdefault(body["task_token"], []).append(now)
        self.got.setdefault(path, []).append(body)
        return web.json_response({})


@pytest.fixture
async def frontend() -> AsyncIterator[tuple[Frontend, str]]:
    server = Frontend()
    app = web.Application(client_max_size=LIMIT, middlewares=[server.count])
    app.router.add_route("POST", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _completion(i: int, size: int) -> dict[str, Any]:
    return {"task_token": f"t{i}", "result": '"' + "x" * size + '"', "identity": "w"}


async def _answer_all(batcher: AnswerBatcher, count: int, size: int) -> list[Any]:
    return list(await asyncio.gather(*(
        batcher.call("POST", "/activity-tasks/complete", body=_completion(i, size)) for i in range(count))))


async def test_batches_stay_under_the_byte_limit(frontend: tuple[Frontend, str]) -> None:
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_in_flight=1, max_bytes=LIMIT - 64, retry=RETRY)
    try:
        await _answer_all(batcher, 10, 20_000)
    finally:
        await transport.close()
    assert server.refused == 0
    assert max(server.sizes) <= LIMIT
    assert sorted(b["task_token"] for b in server.got["complete_activity_task"] + server.got.get(
        "/activity-tasks/complete", [])) == sorted(f"t{i}" for i in range(10))
    assert len(server.sizes) >= 4  # 200 kB of answers cannot go in fewer 64 kB requests


async def test_an_answer_refused_on_its_line_goes_alone_after_the_wait_its_line_asks(
        frontend: tuple[Frontend, str]) -> None:
    # A batch's 503 line carries retry_after_ms (a line has no Retry-After header): the answer
    # goes again alone no sooner, as a lone call's 503 would have it wait; the others stand.
    server, url = frontend
    server.busy, server.busy_wait_ms = frozenset({"t2"}), 300
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_in_flight=1, retry=RETRY)
    try:
        await _answer_all(batcher, 4, 10)
    finally:
        await transport.close()
    together, alone = server.times["t2"]
    assert alone - together >= 0.3
    assert [b["task_token"] for b in server.got["/activity-tasks/complete"]][-1] == "t2"
    assert sorted(b["task_token"] for b in server.got["complete_activity_task"] + server.got[
        "/activity-tasks/complete"]) == ["t0", "t1", "t2", "t3"]


async def test_a_413_splits_the_batch_and_the_limit_is_learnt(frontend: tuple[Frontend, str]) -> None:
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_in_flight=1, retry=RETRY)  # believes the limit is 1 MiB
    try:
        await _answer_all(batcher, 10, 20_000)
        assert batcher.max_bytes < 1 << 20
    finally:
        await transport.close()
    assert server.refused >= 1
    tokens = [b["task_token"] for b in server.got.get("complete_activity_task", [])]
    tokens += [b["task_token"] for b in server.got.get("/activity-tasks/complete", [])]
    assert sorted(tokens) == sorted(f"t{i}" for i in range(10))  # every answer arrived, once


async def test_an_answer_over_the_limit_fails_its_task(frontend: tuple[Frontend, str]) -> None:
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_bytes=LIMIT - 64, retry=RETRY)
    try:
        with pytest.raises(RPCError, match="PayloadTooLarge") as caught:
            await batcher.call("POST", "/activity-tasks/complete", body=_completion(1, 200_000))
        with pytest.raises(RPCError, match="PayloadTooLarge"):
            await batcher.call("POST", "/workflow-tasks/complete", body={
                "task_token": "wt", "commands": [{"command_type": "CompleteWorkflowExecution",
                                                  "attributes": {"result": '"' + "y" * 200_000 + '"'}}]})
    finally:
        await transport.close()
    assert caught.value.status == 413
    failed = server.got["/activity-tasks/fail"][0]
    assert failed["task_token"] == "t1" and failed["failure"]["type"] == "PayloadTooLarge"
    assert failed["failure"]["non_retryable"] is True and "bytes" in failed["failure"]["message"]
    wt_failed = server.got["/workflow-tasks/fail"][0]
    assert wt_failed["task_token"] == "wt" and wt_failed["cause"] == "PayloadTooLarge"
    assert server.refused == 0


async def test_a_failure_over_the_limit_goes_cut_short(frontend: tuple[Frontend, str]) -> None:
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_bytes=LIMIT - 64, retry=RETRY)
    failure = {"message": "m" * 100_000, "type": "Boom", "stack_trace": "s" * 100_000, "non_retryable": False,
               "details": '"' + "d" * 100_000 + '"'}
    try:
        await batcher.call("POST", "/activity-tasks/fail", body={"task_token": "t", "failure": failure})
    finally:
        await transport.close()
    sent = server.got["/activity-tasks/fail"][0]["failure"]
    assert sent["type"] == "Boom" and sent["details"] is None and sent["message"].startswith("mmm")


async def test_run_ahead_too_large_goes_without_it(frontend: tuple[Frontend, str]) -> None:
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_bytes=LIMIT - 64, retry=RETRY)
    body = {**_completion(1, 10), "workflow_task": {"commands": [{"x": "z" * 100_000}]}}
    try:
        await batcher.call("POST", "/activity-tasks/complete", body=body)
    finally:
        await transport.close()
    sent = server.got["/activity-tasks/complete"][0]
    assert sent["task_token"] == "t1" and "workflow_task" not in sent


async def test_a_timer_task_run_ahead_too_large_is_not_sent_and_fails_nothing(frontend: tuple[Frontend, str]) -> None:
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_bytes=LIMIT - 64, retry=RETRY)
    body = {"task_token": "t1", "timer_id": "1", "workflow_task": {"commands": [{"x": "z" * 100_000}]}}
    try:
        with pytest.raises(RPCError) as caught:
            await batcher.call("POST", "/workflow-tasks/timer-ahead", body=body)
        small = {"task_token": "t2", "timer_id": "1", "workflow_task": {"commands": []}}
        await batcher.call("POST", "/workflow-tasks/timer-ahead", body=small)
    finally:
        await transport.close()
    assert caught.value.status == 413
    # Nothing went out for the large one (history fires that timer); the small one goes as an answer.
    sent = server.got.get("timer_ahead_workflow_task") or server.got.get("/workflow-tasks/timer-ahead")
    assert sent is not None and [b["task_token"] for b in sent] == ["t2"]
    assert len(server.got) == 1


async def test_each_answer_is_encoded_once(frontend: tuple[Frontend, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer's JSON is made once: it gives its size and goes as it is, alone or in a batch
    (the batch's body is put together from the answers' encodings, not encoded again)."""
    import orjson

    encoded: list[str] = []
    real = orjson.dumps

    def counting(value: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(value, dict) and "task_token" in value:
            encoded.append(value["task_token"])
        return real(value, *args, **kwargs)

    monkeypatch.setattr(orjson, "dumps", counting)
    server, url = frontend
    transport = HttpTransport(url, "default")
    batcher = AnswerBatcher(transport, max_in_flight=1, retry=RETRY)
    try:
        await _answer_all(batcher, 20, 10)
    finally:
        await transport.close()
    got = server.got.get("complete_activity_task", []) + server.got.get("/activity-tasks/complete", [])
    assert sorted(b["task_token"] for b in got) == sorted(f"t{i}" for i in range(20))
    assert len(server.got.get("complete_activity_task", [])) > 1  # some went in a batch
    assert got == [_completion(int(b["task_token"][1:]), 10) for b in got]
    assert sorted(encoded) == sorted(f"t{i}" for i in range(20))
