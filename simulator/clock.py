"""The simulated exchange clock: `sim_now = anchor + (real_now - real_start) * speed`."""

from __future__ import annotations

import time

from signalengine.simulator.market import EPOCH_MS


class SimClock:
    """Simulated time in epoch milliseconds (UTC), running `speed` times real time.

    `anchor_ms` is the simulated time at start; it defaults to the real time now, so
    history before now exists and, with speed > 1, the simulation runs ahead of it.
    """

    def __init__(self, *, speed: float = 1.0, anchor_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.anchor_ms = int(time.time() * 1000) if anchor_ms is None else anchor_ms
        if self.anchor_ms < EPOCH_MS:
            raise ValueError("anchor_ms is before the market's first bar")
        self._real_start = time.monotonic()

    def now_ms(self) -> int:
        """Simulated time now, epoch milliseconds."""
        elapsed = time.monotonic() - self._real_start
        return self.anchor_ms + int(elapsed * 1000 * self.speed)

    def real_seconds_until(self, sim_ms: int) -> float:
        """Real seconds until the simulated clock reaches `sim_ms` (<= 0 when past)."""
        return (sim_ms - self.now_ms()) / 1000 / self.speed
