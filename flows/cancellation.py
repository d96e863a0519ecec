"""Cancellation from the Prefect UI/API for flow runs that no worker supervises.

A run started by a worker or `serve` is stopped by its runner when it is cancelled; one
started from the command line (as `signalengine up` does) has nobody to kill it, so it
watches its own state and ends itself, cleanly, when it sees CANCELLING.

SIGTERM and Ctrl-C (SIGINT) are the same request made locally: the run finishes the
minute in hand and ends as Cancelled instead of Crashed. A second signal stops it at once.
Several runs in one process (one stream per exchange) each get the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable
from typing import TypeVar
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

T = TypeVar("T")
logger = logging.getLogger(__name__)
POLL_SECONDS = 3.0
# The watches a signal reaches: an event loop holds one handler per signal, so it fans out.
_watching: dict[signal.Signals, list[CancellationWatch]] = {}


def _dispatch(sig: signal.Signals) -> None:
    for watch in list(_watching.get(sig, ())):
        watch.request(sig.name)


class CancellationWatch:
    """Polls the run's state; `race` returns None as soon as a cancel was requested."""

    def __init__(
        self,
        flow_run_id: UUID | str | None,
        *,
        every: float = POLL_SECONDS,
        signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        self.flow_run_id = flow_run_id
        self.every = every
        self.requested = asyncio.Event()
        self.reason: str | None = None
        self._signals = signals
        self._handled: list[signal.Signals] = []
        self._task: asyncio.Task[None] | None = None

    def request(self, reason: str) -> None:
        """Ask the run to stop (what a CANCELLING state or a signal does)."""
        if self.requested.is_set():
            raise KeyboardInterrupt(f"{reason} again: stopping now")
        self.reason = reason
        self.requested.set()

    async def __aenter__(self) -> CancellationWatch:
        if self.flow_run_id is not None:
            self._task = asyncio.create_task(self._poll())
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in self._signals:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    # (re)installed each time: a flow run starting in this process puts
                    # Prefect's own SIGTERM handler back in place of ours
                    loop.add_signal_handler(sig, _dispatch, sig)
                    _watching.setdefault(sig, []).append(self)
                    self._handled.append(sig)
        return self

    async def __aexit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._handled:
            watches = _watching.get(sig, [])
            if self in watches:
                watches.remove(self)
            if not watches:
                loop.remove_signal_handler(sig)
        self._handled = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        async with get_client() as client:
            while not self.requested.is_set():
                await asyncio.sleep(self.every)
                try:
                    run = await client.read_flow_run(UUID(str(self.flow_run_id)))
                except Exception as error:  # the API may blip; the stream must not stop for it
                    logger.debug("could not read the flow run state: %s", error)
                    continue
                if run.state is not None and run.state.type in (
                    StateType.CANCELLING,
                    StateType.CANCELLED,
                ):
                    self.reason = "cancelled through Prefect"
                    self.requested.set()

    async def race(self, awaitable: Awaitable[T]) -> T | None:
        """The awaitable's result, or None (the awaitable cancelled) once cancel is requested."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.create_task(self.requested.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        # a cancel wins even over a result that is ready: a run that is behind (its work
        # always ready at once) would otherwise never stop; what it drops is refetched
        if work.done() and not self.requested.is_set():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        return None
