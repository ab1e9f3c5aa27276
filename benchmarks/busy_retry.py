"""How hard do a client's retries press a frontend that answers every call ``503`` with
``Retry-After`` for a while (as ``Busy`` does), and how soon are its calls done after?

    python -m benchmarks.busy_retry --calls 200 --busy 3 --retry-after 1

A stand-in frontend (aiohttp, this process) answers every request 503 with the given
``Retry-After`` for ``--busy`` seconds from the first, then 200. One SDK client (its
defaults, ``batch_calls`` off) sends ``--calls`` signals at once, each retried by the
SDK's own rules. Prints the requests refused during the busy time and when the last call
returned, as one JSON line. Run it from two source trees (``PYTHONPATH=<tree>``),
alternated, to compare retry rules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

from kadence import Client
from kadence._http import HttpTransport


async def run(calls: int, busy: float, retry_after: str) -> dict[str, float]:
    began: float | None = None
    refused = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal began, refused
        await request.read()
        now = time.monotonic()
        began = now if began is None else began
        if now - began < busy:
            refused += 1
            return web.json_response({"error": "Unavailable", "message": "busy"}, status=503,
                                     headers={"Retry-After": retry_after})
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with Client(HttpTransport(url, "default"), batch_calls=False) as client:
            t0 = time.monotonic()
            await asyncio.gather(*(client.get_workflow_handle(f"w{i}").signal("s") for i in range(calls)))
            took = time.monotonic() - t0
    finally:
        await runner.cleanup()
    return {"calls": calls, "busy_s": busy, "refused": refused, "done_s": round(took, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--busy", type=float, default=3.0, help="seconds the frontend answers 503")
    parser.add_argument("--retry-after", default="1", help="the 503s' Retry-After header")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.calls, args.busy, args.retry_after))))


if __name__ == "__main__":
    main()
