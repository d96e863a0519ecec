"""What a simulator run is made of: dialect, symbols, seed, speed, and the faults to inject."""

from __future__ import annotations

from dataclasses import dataclass, field

from signalengine.simulator.market import DEFAULT_SEED

DEFAULT_SYMBOLS: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT")
DIALECTS: tuple[str, ...] = ("binance", "bybit")  # the wire protocols a simulator can speak
# Each venue's default market seed is its own, so two venues' bars differ.
_VENUE_SEED_OFFSET = {"binance": 0, "bybit": 1_000_003}
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


@dataclass(frozen=True)
class Faults:
    """Faults the simulator injects; everything is off by default.

    Rates are probabilities per closed kline, drawn per WebSocket connection from a
    generator seeded by the run's seed, so a run is reproducible.
    """

    ws_drop_every_s: float | None = None  # close every WS connection N real seconds in
    duplicate_rate: float = 0.0  # send a closed kline twice
    out_of_order_rate: float = 0.0  # hold a closed kline back until after the next one
    malformed_rate: float = 0.0  # send a broken closed kline before the genuine one
    rest_429_every: int | None = None  # rate-limit every k-th REST request (Binance: 429)
    retry_after_s: int = 1  # the Retry-After of those 429 answers

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "out_of_order_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.ws_drop_every_s is not None and self.ws_drop_every_s <= 0:
            raise ValueError("ws_drop_every_s must be positive")
        if self.rest_429_every is not None and self.rest_429_every < 1:
            raise ValueError("rest_429_every must be at least 1")


@dataclass(frozen=True)
class SimulatorConfig:
    """A simulator run: dialect, unified symbols, market seed, clock speed and anchor, faults.

    `exchange` only picks the wire format (Binance or Bybit v5); the market is the same
    generator either way. `seed=None` means the dialect's default, `venue_seed(exchange)`.
    """

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    seed: int | None = None
    speed: float = 1.0
    anchor_ms: int | None = None  # sim time at start, epoch ms; None = real time now
    faults: Faults = field(default_factory=Faults)
    exchange: str = "binance"

    def __post_init__(self) -> None:
        if self.exchange not in DIALECTS:
            raise ValueError(f"unknown dialect {self.exchange!r}; use one of {', '.join(DIALECTS)}")
        if self.seed is None:
            object.__setattr__(self, "seed", venue_seed(self.exchange))
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        object.__setattr__(self, "symbols", tuple(unified_symbol(s) for s in self.symbols))
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    @property
    def market_seed(self) -> int:
        """The seed the market is generated with (the dialect's default when none given)."""
        return venue_seed(self.exchange) if self.seed is None else self.seed


def venue_seed(exchange: str, base: int = DEFAULT_SEED) -> int:
    """The default market seed of a dialect: `base` for Binance, a fixed offset for others."""
    return base + _VENUE_SEED_OFFSET[exchange]


def unified_symbol(symbol: str) -> str:
    """`BTC/USDT` for `BTC/USDT`, `btcusdt` or `BTCUSDT`."""
    text = symbol.strip().upper()
    if "/" in text:
        return text
    for quote in _QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return f"{text[: -len(quote)]}/{quote}"
    raise ValueError(f"cannot split {symbol!r} into base and quote; write it as BASE/QUOTE")


def market_id(symbol: str) -> str:
    """Binance's id of a unified symbol: `BTC/USDT` -> `BTCUSDT`."""
    return unified_symbol(symbol).replace("/", "")
