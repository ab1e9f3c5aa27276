"""Parts of a service for its stop's tests: each records its stop and may fail it."""

from __future__ import annotations


class Failed(Exception):
    """The failure a part's stop raises."""


class Part:
    """Stands for what a service stops (a consumer, a server, a pool...): ``stop``,
    ``close`` and ``cleanup`` record ``name`` in ``stopped``; ``fails``: then raise."""

    def __init__(self, name: str, stopped: list[str], *, fails: bool = False) -> None:
        self.name, self.stopped, self.fails = name, stopped, fails

    async def stop(self) -> None:
        self.stopped.append(self.name)
        if self.fails:
            raise Failed(f"stopping {self.name} failed")

    close = cleanup = stop
