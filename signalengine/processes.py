"""Child processes of `up`: supervised services and one-shot jobs, each in its own group.

Each child runs in its own process group so that stopping it also stops whatever it
spawned (Prefect's server and MLflow start workers of their own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ONE_SHOT_TIMEOUT_SECONDS = 300.0

__all__ = ["Child", "one_shot", "run_to_end"]


@dataclass
class Child:
    """One supervised process and how to (re)start it."""

    name: str
    argv: list[str]
    log: Path
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def one_shot(name: str, args: list[str], *, env: dict[str, str], logs: Path) -> Child:
    """A job of the stack that runs once (not restarted), output in logs/<name>.log."""
    child = Child(name, [sys.executable, "-m", "signalengine", *args], logs / f"{name}.log")
    child.env = env
    child.start()
    return child


def run_to_end(child: Child, stopping: list[bool]) -> None:
    """Wait for a one-shot job; a failure is reported, never fatal to the stack."""
    deadline = time.monotonic() + ONE_SHOT_TIMEOUT_SECONDS
    while child.alive() and not stopping and time.monotonic() < deadline:
        time.sleep(0.2)
    if child.alive():
        child.signal_group(signal.SIGTERM)
    elif child.process is not None and child.process.returncode != 0:
        sys.stderr.write(f"{child.name} failed; see {child.log}\n")
