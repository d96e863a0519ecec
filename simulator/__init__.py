"""An exchange simulator over a seeded, deterministic synthetic market.

`market_bars` is the ground truth; `running_simulator` (tests) and `serve` (CLI) put it
behind Binance's spot REST and WebSocket kline API on 127.0.0.1, or Bybit v5's
(`exchange="bybit"`), whose default seed is `venue_seed("bybit")`.
"""

from signalengine.simulator.clock import SimClock
from signalengine.simulator.config import (
    DEFAULT_SYMBOLS,
    DIALECTS,
    Faults,
    SimulatorConfig,
    market_id,
    unified_symbol,
    venue_seed,
)
from signalengine.simulator.market import (
    BAR_DTYPE,
    DEFAULT_SEED,
    EPOCH_MS,
    MINUTE_MS,
    SymbolProfile,
    aggregate_bars,
    bars_to_frame,
    market_bars,
    symbol_profile,
)
from signalengine.simulator.server import create_app, running_simulator, serve

__all__ = [
    "BAR_DTYPE",
    "DEFAULT_SEED",
    "DEFAULT_SYMBOLS",
    "DIALECTS",
    "EPOCH_MS",
    "MINUTE_MS",
    "Faults",
    "SimClock",
    "SimulatorConfig",
    "SymbolProfile",
    "aggregate_bars",
    "bars_to_frame",
    "create_app",
    "market_bars",
    "market_id",
    "running_simulator",
    "serve",
    "symbol_profile",
    "unified_symbol",
    "venue_seed",
]
