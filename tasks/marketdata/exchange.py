"""The ccxt boundary: build the exchange, page through candle history, stream closed bars.

Everything that talks to an exchange goes through here, and ccxt errors are translated
here: `ccxt.NetworkError` (which covers `RateLimitExceeded` and `DDoSProtection`) becomes
`TemporaryExchangeError` (retried by callers), any other ccxt error `ExchangeError`.

With `base_url` set, the exchange talks to the built-in simulator instead of Binance;
the same ccxt code runs either way.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

from signalengine.core.errors import ConfigurationError, ExchangeError, TemporaryExchangeError

__all__ = [
    "ClosedBar",
    "ClosedBarBinance",
    "ExchangeError",
    "TemporaryExchangeError",
    "connected_exchange",
    "create_exchange",
    "fetch_ohlcv_range",
    "translate_error",
    "watch_closed_bars",
]

OHLCV_PAGE_LIMIT = 1000  # Binance's maximum klines per request
CLOSED_BAR_BUFFER = 100_000  # per (symbol, timeframe); the oldest go first when full
_SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot", "fetchCurrencies": False}


@dataclass(frozen=True)
class ClosedBar:
    """A closed kline as the exchange sent it (`x: true`), not validated.

    `raw` is Binance's kline object `k` untouched: `t` open time (epoch ms, UTC), `o h l
    c v` as strings, and the rest; it may be malformed, validation happens downstream.
    `event_ms` is the event time `E`; `received_at` is the local wall clock, epoch s.
    """

    exchange: str
    symbol: str  # ccxt unified, e.g. BTC/USDT
    timeframe: str
    raw: dict[str, Any]
    event_ms: int | None
    received_at: float

    def to_row(self) -> dict[str, Any]:
        """The raw values as a kline row: exchange, symbol, ts, open, high, low, close, volume."""
        from signalengine.tasks.marketdata.batching import raw_kline_row

        return raw_kline_row(self.exchange, self.symbol, self.raw)


class ClosedBarBinance(ccxt_pro.binance):  # type: ignore[misc]
    """`ccxt.pro.binance` that also keeps every closed kline (which ccxt's OHLCV drops)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        self._closed: defaultdict[tuple[str, str], deque[tuple[int, ClosedBar]]] = defaultdict(
            lambda: deque(maxlen=CLOSED_BAR_BUFFER)
        )
        self._arrival = itertools.count()

    def handle_ohlcv(self, client: Any, message: dict[str, Any]) -> None:
        kline = message.get("k") if isinstance(message, dict) else None
        if isinstance(kline, dict) and kline.get("x") is True and message.get("e") == "kline":
            # Resolve the symbol the way ccxt does, from the id and the transport URL.
            market_type = "spot" if self.is_spot_url(client) else "contract"
            symbol = self.safe_symbol(kline.get("s"), None, None, market_type)
            timeframe = self.find_timeframe(kline.get("i"))
            event = message.get("E")
            bar = ClosedBar(
                exchange=self.id,
                symbol=str(symbol),
                timeframe=str(timeframe),
                raw=dict(kline),
                event_ms=event if isinstance(event, int) else None,
                received_at=time.time(),
            )
            self._closed[(bar.symbol, bar.timeframe)].append((next(self._arrival), bar))
        super().handle_ohlcv(client, message)

    def drain_closed_bars(self, symbols: Sequence[str], timeframe: str) -> list[ClosedBar]:
        """Take the buffered closed bars of `symbols`, in arrival order."""
        taken: list[tuple[int, ClosedBar]] = []
        for symbol in symbols:
            queue = self._closed.get((symbol, timeframe))
            while queue:
                taken.append(queue.popleft())
        taken.sort(key=lambda item: item[0])
        return [bar for _, bar in taken]


def translate_error(exc: Exception) -> Exception:
    """Our error for a ccxt error (others pass through unchanged)."""
    if isinstance(exc, ccxt.NetworkError):  # RateLimitExceeded, DDoSProtection, timeouts...
        return TemporaryExchangeError(str(exc))
    if isinstance(exc, ccxt.BaseError):
        return ExchangeError(str(exc))
    return exc


def _point_at(urls: Any, http_base: str, ws_base: str) -> Any:
    """Every http(s)/ws(s) URL in a ccxt `urls['api']` tree, moved to our host, path kept."""
    if isinstance(urls, dict):
        return {key: _point_at(value, http_base, ws_base) for key, value in urls.items()}
    if isinstance(urls, str):
        parts = urlsplit(urls)
        if parts.scheme in ("http", "https"):
            return http_base + parts.path
        if parts.scheme in ("ws", "wss"):
            return ws_base + parts.path
    return urls


def create_exchange(
    exchange_id: str = "binance",
    *,
    base_url: str | None = None,
    pro: bool = True,
    config: dict[str, Any] | None = None,
) -> Any:
    """An async ccxt exchange (spot markets only, rate limiter on); close it when done.

    With `pro` and Binance this is a `ClosedBarBinance`. `base_url`, e.g.
    `http://127.0.0.1:8765`, sends all REST and WebSocket traffic to the simulator.
    """
    settings: dict[str, Any] = {"enableRateLimit": True, **(config or {})}
    settings["options"] = {**_SPOT_ONLY, **settings.get("options", {})}
    if pro and exchange_id == "binance":
        exchange: Any = ClosedBarBinance(settings)
    else:
        module = ccxt_pro if pro else ccxt_async
        if not hasattr(module, exchange_id):
            raise ConfigurationError(f"ccxt has no exchange {exchange_id!r}")
        exchange = getattr(module, exchange_id)(settings)
    if base_url is not None:
        if exchange_id != "binance":
            raise ConfigurationError("the simulator speaks Binance's protocol only")
        http_base = base_url.rstrip("/")
        ws_base = "ws" + http_base.removeprefix("http")  # http -> ws, https -> wss
        exchange.urls["api"] = _point_at(exchange.urls["api"], http_base, ws_base)
    return exchange


@asynccontextmanager
async def connected_exchange(
    exchange_id: str = "binance", *, base_url: str | None = None, pro: bool = True
) -> AsyncIterator[Any]:
    """`create_exchange` with its markets loaded, closed on exit."""
    exchange = create_exchange(exchange_id, base_url=base_url, pro=pro)
    try:
        try:
            await exchange.load_markets()
        except ccxt.BaseError as exc:
            raise translate_error(exc) from exc
        yield exchange
    finally:
        await exchange.close()


async def fetch_ohlcv_range(
    exchange: Any,
    symbol: str,
    since_ms: int,
    until_ms: int,
    *,
    timeframe: str = "1m",
) -> list[list[float]]:
    """Closed candles of `symbol` opening in [since_ms, until_ms), oldest first, no repeats.

    Rows are ccxt's `[ts_ms, open, high, low, close, volume]`, ts the open time (UTC).
    Pages with `fetch_ohlcv(..., limit=1000)`; safe to call again for the same range.
    """
    step_ms = int(exchange.parse_timeframe(timeframe)) * 1000
    candles: dict[int, list[float]] = {}
    cursor = since_ms
    while cursor < until_ms:
        try:
            page = await exchange.fetch_ohlcv(
                symbol,
                timeframe,
                since=cursor,
                limit=OHLCV_PAGE_LIMIT,
                params={"until": until_ms - 1},
            )
        except ccxt.BaseError as exc:
            raise translate_error(exc) from exc
        rows = [row for row in page if since_ms <= row[0] < until_ms]
        if not rows or rows[-1][0] < cursor:
            break
        for row in rows:
            candles.setdefault(int(row[0]), row)
        cursor = int(rows[-1][0]) + step_ms
    return [candles[ts] for ts in sorted(candles)]


async def watch_closed_bars(
    exchange: ClosedBarBinance, symbols: Sequence[str], *, timeframe: str = "1m"
) -> list[ClosedBar]:
    """Closed bars of `symbols` received since the last call; waits for at least one.

    Subscribes on the first call; bars keep arriving into the buffer between calls. A
    dropped connection raises `TemporaryExchangeError`; calling again reconnects.
    """
    wanted = [[symbol, timeframe] for symbol in symbols]
    while True:
        bars = exchange.drain_closed_bars(symbols, timeframe)
        if bars:
            return bars
        try:
            await exchange.watch_ohlcv_for_symbols(wanted)
        except ccxt.BaseError as exc:
            raise translate_error(exc) from exc
