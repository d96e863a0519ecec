"""Real child processes for multi-process tests: started in their own group, always reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx


def signalengine(args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `signalengine <args>` (as `python -m signalengine`) with output to `log`."""
    sink = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "signalengine", *args],
        env=env,
        stdout=sink,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal the whole group, wait, then kill what is left."""
    stop_all([proc], sig=sig, timeout=timeout)


def stop_all(
    procs: list[subprocess.Popen[bytes]], *, sig: int = signal.SIGTERM, timeout: float = 20
) -> None:
    """`stop` for several processes at once: every group is signalled before any is
    awaited, so they wind down side by side."""
    live = [proc for proc in procs if proc.poll() is None]
    for proc in live:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    for proc in live:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in live:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def running(procs: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Stop every process on exit, whatever happened."""
    try:
        yield procs
    finally:
        stop_all(procs)


def wait_http(url: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `url` answers 200 (or fail early when `proc` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")
