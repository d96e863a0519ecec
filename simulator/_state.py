"""Run-wide state of a simulator: its config, its clock, and what it has injected."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from signalengine.simulator._klines import INTERVAL_MINUTES
from signalengine.simulator.clock import SimClock
from signalengine.simulator.config import SimulatorConfig, market_id

# Counter names shown under "injected" and "traffic" in /sim/status.
INJECTED = ("ws_drops", "duplicates", "out_of_order", "malformed", "rest_429")
TRAFFIC = ("rest_requests", "ws_connections", "klines_sent", "closed_klines_sent")
MALFORMED_LOG_SIZE = 100_000  # malformed klines listed in /sim/status (the newest are kept)


class SimState:
    """Shared by every request of one app; all access is from the app's event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.market_seed
        self.clock = SimClock(speed=config.speed, anchor_ms=config.anchor_ms)
        self.symbol_by_id = {market_id(s): s for s in config.symbols}
        self.counters: Counter[str] = Counter(dict.fromkeys(INJECTED + TRAFFIC, 0))
        self.connection_seq = 0
        self.malformed_log: list[dict[str, Any]] = []

    def note_malformed(self, market: str, kline: dict[str, Any]) -> None:
        """Remember a malformed kline that was sent, so tests can match it against rejects."""
        entry = {"symbol": self.symbol_by_id[market], "t": kline["t"], "c": kline["c"]}
        entry.update(h=kline["h"], l=kline["l"])
        self.malformed_log.append(entry)
        del self.malformed_log[:-MALFORMED_LOG_SIZE]

    def stream_of(self, name: str) -> tuple[str, str] | None:
        """(market id, interval) of a stream name like `btcusdt@kline_1m`, else None."""
        lowered_id, sep, channel = name.partition("@")
        mid = lowered_id.upper()
        if not sep or not channel.startswith("kline_") or mid not in self.symbol_by_id:
            return None
        interval = channel.removeprefix("kline_")
        return (mid, interval) if interval in INTERVAL_MINUTES else None

    def status(self) -> dict[str, Any]:
        now = self.clock.now_ms()
        return {
            "sim_time_ms": now,
            "sim_time": datetime.fromtimestamp(now / 1000, tz=UTC).isoformat(),
            "anchor_ms": self.clock.anchor_ms,
            "speed": self.config.speed,
            "exchange": self.config.exchange,
            "seed": self.seed,
            "symbols": list(self.config.symbols),
            "intervals": list(INTERVAL_MINUTES),
            "faults": asdict(self.config.faults),
            "injected": {name: self.counters[name] for name in INJECTED},
            "traffic": {name: self.counters[name] for name in TRAFFIC},
            "malformed_klines": list(self.malformed_log),
        }
