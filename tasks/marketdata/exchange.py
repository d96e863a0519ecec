"""The ccxt boundary: build the exchange, page through candle history, stream closed bars.

Everything that talks to an exchange goes through here, and ccxt errors are translated
here: `ccxt.NetworkError` (which covers `RateLimitExceeded` and `DDoSProtection`) becomes
`TemporaryExchangeError` (retried by callers), any other ccxt error `ExchangeError`.

With `base_url` set, the exchange talks to the built-in simulator instead of the real
venue (Binance or Bybit, the simulator's two dialects); the same ccxt code runs either way.
Closed bars reach the pipeline in one shape whatever the venue: a Binance-style kline
object (`t o h l c v` as sent), see `ClosedBar`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

from signalengine.core.errors import ConfigurationError, ExchangeError, TemporaryExchangeError
from signalengine.core.retry import backoff_seconds

__all__ = [
    "ClosedBar",
    "ClosedBarBinance",
    "ClosedBarBybit",
    "SIMULATED_EXCHANGES",
    "ExchangeError",
    "TemporaryExchangeError",
    "connected_exchange",
    "RestPolicy",
    "create_exchange",
    "exchange_time_ms",
    "fetch_ohlcv_page",
    "fetch_ohlcv_range",
    "resilient_call",
    "translate_error",
    "watch_closed_bars",
]

OHLCV_PAGE_LIMIT = 1000  # Binance's and Bybit's maximum klines per request
CLOSED_BAR_BUFFER = 100_000  # per (symbol, timeframe); the oldest go first when full
logger = logging.getLogger(__name__)
_SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot", "fetchCurrencies": False}


@dataclass(frozen=True)
class ClosedBar:
    """A closed kline as the exchange sent it (`x: true`), not validated.

    `raw` is Binance's kline object `k` untouched: `t` open time (epoch ms, UTC), `o h l
    c v` as strings, and the rest; it may be malformed, validation happens downstream.
    Other venues' candles are renamed into those keys, values untouched (`ClosedBarBybit`).
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


class _ClosedBarBuffer:
    """Closed bars kept per (symbol, timeframe), in arrival order across all of them."""

    def _init_buffer(self) -> None:
        self._closed: defaultdict[tuple[str, str], deque[tuple[int, ClosedBar]]] = defaultdict(
            lambda: deque(maxlen=CLOSED_BAR_BUFFER)
        )
        self._arrival = itertools.count()

    def _keep(self, bar: ClosedBar) -> None:
        self._closed[(bar.symbol, bar.timeframe)].append((next(self._arrival), bar))

    def drain_closed_bars(self, symbols: Sequence[str], timeframe: str) -> list[ClosedBar]:
        """Take the buffered closed bars of `symbols`, in arrival order."""
        taken: list[tuple[int, ClosedBar]] = []
        for symbol in symbols:
            queue = self._closed.get((symbol, timeframe))
            while queue:
                taken.append(queue.popleft())
        taken.sort(key=lambda item: item[0])
        return [bar for _, bar in taken]


class ClosedBarBinance(_ClosedBarBuffer, ccxt_pro.binance):  # type: ignore[misc]
    """`ccxt.pro.binance` that also keeps every closed kline (which ccxt's OHLCV drops)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        self._init_buffer()

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
            self._keep(bar)
        super().handle_ohlcv(client, message)


_BYBIT_KEYS = {"start": "t", "end": "T", "open": "o", "high": "h", "low": "l", "close": "c"}
_BYBIT_KEYS.update(volume="v", turnover="q", interval="i")


def bybit_kline(candle: dict[str, Any]) -> dict[str, Any]:
    """A Bybit v5 WS candle as a Binance-style kline object: keys renamed, values as sent."""
    raw = {_BYBIT_KEYS.get(key, key): value for key, value in candle.items()}
    raw["x"] = candle.get("confirm") is True
    return raw


class ClosedBarBybit(_ClosedBarBuffer, ccxt_pro.bybit):  # type: ignore[misc]
    """`ccxt.pro.bybit` that also keeps every closed candle (`confirm: true`), which ccxt's
    OHLCV cache overwrites in place by timestamp and never marks."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        self._init_buffer()

    def handle_ohlcv(self, client: Any, message: dict[str, Any]) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        topic = str(message.get("topic", "")) if isinstance(message, dict) else ""
        parts = topic.split(".")
        if isinstance(data, list) and len(parts) >= 3:
            # Resolve the symbol the way ccxt does, from the topic and the transport URL.
            market_type = "spot" if "spot" in str(client.url) else "contract"
            symbol = self.safe_market(parts[-1], None, None, market_type)["symbol"]
            timeframe = self.find_timeframe(parts[1])
            for candle in data:
                if not isinstance(candle, dict) or candle.get("confirm") is not True:
                    continue
                event = candle.get("timestamp", message.get("ts"))
                bar = ClosedBar(
                    exchange=self.id,
                    symbol=str(symbol),
                    timeframe=str(timeframe),
                    raw=bybit_kline(candle),
                    event_ms=event if isinstance(event, int) else None,
                    received_at=time.time(),
                )
                self._keep(bar)
        super().handle_ohlcv(client, message)


# The exchanges the simulator speaks, with the ccxt.pro class that keeps closed bars.
SIMULATED_EXCHANGES: dict[str, type] = {"binance": ClosedBarBinance, "bybit": ClosedBarBybit}
ClosedBarExchange = ClosedBarBinance | ClosedBarBybit


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

    With `pro` and Binance or Bybit this is a `ClosedBarBinance` / `ClosedBarBybit`
    (ccxt's own `rateLimit` for that venue). `base_url`, e.g. `http://127.0.0.1:8765`,
    sends all REST and WebSocket traffic to a simulator speaking that venue's dialect.
    """
    settings: dict[str, Any] = {"enableRateLimit": True, **(config or {})}
    settings["options"] = {**_SPOT_ONLY, **settings.get("options", {})}
    if pro and exchange_id in SIMULATED_EXCHANGES:
        exchange: Any = SIMULATED_EXCHANGES[exchange_id](settings)
    else:
        module = ccxt_pro if pro else ccxt_async
        if not hasattr(module, exchange_id):
            raise ConfigurationError(f"ccxt has no exchange {exchange_id!r}")
        exchange = getattr(module, exchange_id)(settings)
    if base_url is not None:
        if exchange_id not in SIMULATED_EXCHANGES:
            known = ", ".join(SIMULATED_EXCHANGES)
            raise ConfigurationError(f"the simulator speaks {known} only, not {exchange_id!r}")
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
    exchange: ClosedBarExchange, symbols: Sequence[str], *, timeframe: str = "1m"
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


Acquire = Callable[[], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class RestPolicy:
    """How every REST request is made: a rate-limit slot first (the Prefect global limit,
    on top of ccxt's own limiter), then retries of temporary errors with capped exponential
    backoff, never sooner than the exchange's `Retry-After`."""

    acquire: Acquire | None = None
    max_attempts: int = 8
    base_seconds: float = 0.5
    cap_seconds: float = 60.0
    on_retry: Callable[[Exception], None] | None = None


def _retry_after(exchange: Any) -> float | None:
    """`Retry-After` (seconds) of the exchange's last answer, when it sent one."""
    headers = getattr(exchange, "last_response_headers", None) or {}
    for name, value in dict(headers).items():
        if str(name).lower() == "retry-after" and str(value).strip().isdigit():
            return float(str(value).strip())
    return None


async def resilient_call(
    exchange: Any, call: Callable[[], Awaitable[T]], *, what: str, policy: RestPolicy
) -> T:
    """`await call()` under `policy`: 418/429 and network errors are retried, others raised.

    Raises `TemporaryExchangeError` after `policy.max_attempts` temporary failures.
    """
    for attempt in range(policy.max_attempts):
        if policy.acquire is not None:
            await policy.acquire()
        try:
            return await call()
        except ccxt.BaseError as exc:
            error = translate_error(exc)
            if not isinstance(error, TemporaryExchangeError):
                raise error from exc
        except TemporaryExchangeError as exc:
            error = exc
        if policy.on_retry is not None:
            policy.on_retry(error)
        delay = backoff_seconds(attempt, base=policy.base_seconds, cap=policy.cap_seconds)
        delay = max(delay, min(_retry_after(exchange) or 0.0, policy.cap_seconds))
        logger.warning("%s: %s; retrying in %.1f s", what, str(error)[:120], delay)
        await asyncio.sleep(delay)
    raise TemporaryExchangeError(f"{what}: gave up after {policy.max_attempts} attempts")


async def fetch_ohlcv_page(
    exchange: Any,
    symbol: str,
    since_ms: int,
    until_ms: int,
    *,
    policy: RestPolicy,
    timeframe: str = "1m",
) -> list[list[Any]]:
    """One page (up to 1000) of closed candles opening in [since_ms, until_ms), oldest first.

    Rows are ccxt's `[ts_ms, open, high, low, close, volume]` (UTC open time); retried
    under `policy`. An empty list means the exchange has nothing more in the range.
    """

    async def call() -> list[list[Any]]:
        page: list[list[Any]] = await exchange.fetch_ohlcv(
            symbol,
            timeframe,
            since=since_ms,
            limit=OHLCV_PAGE_LIMIT,
            params={"until": until_ms - 1},
        )
        return page

    page = await resilient_call(exchange, call, what=f"klines {symbol}", policy=policy)
    return [row for row in page if since_ms <= row[0] < until_ms]


async def exchange_time_ms(exchange: Any, *, policy: RestPolicy) -> int:
    """The exchange's clock (epoch ms, UTC), retried under `policy`."""

    async def call() -> int:
        return int(await exchange.fetch_time())

    return await resilient_call(exchange, call, what="server time", policy=policy)
