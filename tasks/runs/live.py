"""The live driver of the engine: signals for each primary bar as it closes.

The live stream keeps each timeframe's trailing closed bars in memory
(`tasks.runs.windows.LiveWindows`: seeded from the database, advanced from the bars the
stream stores), so a primary close reads no window from the database; a replay, without
windows, reads them from the database per close. Either way it runs
`tasks.engine.pipeline.evaluate_latest_series` (the same code the backtest runs) on the
same closed bars and writes the signals. Where it got to is kept in `stream_watermarks`,
so a restarted stream resumes at the next unprocessed primary close and evaluates none
twice.

Each close is one transaction: its signals, their webhook outbox rows and the new
watermark commit together, and the engine's in-memory state (cooldowns, the watermark)
is replaced by the evaluated copy only after that commit. A failure anywhere (the
connection dropping between evaluation and insert, say) leaves both the database and
the state as they were, so a retry produces exactly the signals a first attempt would.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from signalengine.core.config import Settings
from signalengine.core.db import DbConn
from signalengine.core.vocabulary import DEFAULT_STRATEGY, LIVE_RUN, SHADOW_RUN, TIMEFRAME_MINUTES
from signalengine.tasks import metrics
from signalengine.tasks.alerts.outbox import enqueue_deliveries
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import default_strategies, load_strategies
from signalengine.tasks.engine.pipeline import evaluate_latest_batch, evaluate_latest_series
from signalengine.tasks.engine.records import CooldownState, Signal
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.learning.ai_filter import ChampionFilter
from signalengine.tasks.marketdata.ingest import primary_closes
from signalengine.tasks.marketdata.klines import load_bars
from signalengine.tasks.outcomes.controls import SymbolControl, load_all_controls
from signalengine.tasks.outcomes.signals import insert_signals, load_cooldown_state
from signalengine.tasks.runs.windows import LiveWindows

MS = 1_000_000  # ns per ms
# Called between evaluation and storage; tests use it to inject faults (e.g. kill the
# connection) at the one point where an in-memory update could outrun the database.
BeforeStore = Callable[[DbConn, list[Signal]], None]


def _copy_cooldown(state: CooldownState) -> CooldownState:
    return CooldownState({key: dict(sides) for key, sides in state.last_emitted.items()})


def _load_cooldowns(
    conn: DbConn, *, run_id: str, symbols: list[str], strategies: list[Strategy]
) -> CooldownState:
    """Every strategy's cooldown state, rebuilt from its stored signals of the run."""
    state = CooldownState()
    for strategy in strategies:
        part = load_cooldown_state(conn, run_id=run_id, symbols=symbols, strategy=strategy.name)
        for (_, symbol, timeframe), sides in part.last_emitted.items():
            state.last_emitted[(strategy.name, symbol, timeframe)] = sides
    return state


@dataclass
class LiveEngine:
    """Engine state of one streaming shard."""

    settings: Settings
    config: EngineConfig
    exchange: str
    symbols: list[str]
    run_id: str
    watermark_name: str
    watermark_ms: int
    cooldown: CooldownState
    ai_filter: ChampionFilter | None = None  # the default strategy's (and /health's)
    # every other strategy's own filter: the champion of signalengine-filter-<strategy>
    strategy_filters: dict[str, ChampionFilter] = field(default_factory=dict)
    webhook_urls: list[str] = field(default_factory=list)
    webhook_min_score: float = 1.0
    before_store: BeforeStore | None = None
    windows: LiveWindows | None = None  # None: read each close's windows from the database
    # SIGNALENGINE_STRATEGIES, run together over shared features; empty: the default one.
    strategies: list[Strategy] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        conn: DbConn,
        *,
        settings: Settings,
        symbols: list[str],
        run_id: str,
        shard: str | None,
    ) -> LiveEngine:
        name = f"{run_id}:{settings.exchange}:{shard or 'all'}"
        row = conn.execute("SELECT ts FROM stream_watermarks WHERE name = %s", (name,)).fetchone()
        mark = -1 if row is None else int(pd.Timestamp(row["ts"]).value // MS)
        config = EngineConfig.from_settings(settings)
        strategies = load_strategies(settings.strategies, config)
        return cls(
            settings=settings,
            config=config,
            exchange=settings.exchange,
            symbols=symbols,
            run_id=run_id,
            watermark_name=name,
            watermark_ms=mark,
            cooldown=_load_cooldowns(conn, run_id=run_id, symbols=symbols, strategies=strategies),
            strategies=strategies,
            ai_filter=ChampionFilter.from_settings(settings),
            strategy_filters={
                s.name: ChampionFilter.from_settings(settings, strategy=s.name)
                for s in strategies
                if s.name != DEFAULT_STRATEGY
            },
            webhook_urls=list(settings.webhook_urls) if run_id == LIVE_RUN else [],
            webhook_min_score=settings.webhook_min_score,
        )

    def ensure_watermark(self, conn: DbConn, now_ms: int) -> None:
        """On a first start, begin at the current primary close: history is not replayed."""
        if self.watermark_ms < 0:
            step = TIMEFRAME_MINUTES[self.config.primary_timeframe] * 60_000
            self._save(conn, now_ms // step * step)

    def _save(self, conn: DbConn, close_ms: int) -> None:
        self._write_watermark(conn, close_ms)
        self.watermark_ms = close_ms

    def _write_watermark(self, conn: DbConn, close_ms: int) -> None:
        conn.execute(
            "INSERT INTO stream_watermarks (name, ts) VALUES (%s, %s) ON CONFLICT (name)"
            " DO UPDATE SET ts = EXCLUDED.ts, updated_at = now()",
            (self.watermark_name, pd.Timestamp(close_ms * MS, tz="UTC")),
        )

    def hold_windows(self, conn: DbConn, *, now_ms: int) -> LiveWindows:
        """Seed the in-memory windows as of `now_ms` (a minute boundary), holding every
        close after the watermark too (a restarted stream evaluates those first)."""
        step = TIMEFRAME_MINUTES[self.config.primary_timeframe] * 60_000
        windows = LiveWindows(
            exchange=self.exchange,
            symbols=list(self.symbols),
            timeframes=self.config.timeframes,
            window=self.config.live_window_bars,
            primary=self.config.primary_timeframe,
        )
        pending = self.watermark_ms + step if self.watermark_ms >= 0 else now_ms
        windows.seed(conn, at_ms=now_ms, from_ms=pending)
        self.windows = windows
        return windows

    def advance(
        self,
        conn: DbConn,
        *,
        upto_ms: int,
        stored: pd.DataFrame | None = None,
        newest_ms: dict[str, int | None] | None = None,
        bars_stored: Callable[[], None] | None = None,
    ) -> None:
        """Bring the windows to `upto_ms` from the 1m bars just stored (`stored`) and the
        stream's watermarks (`newest_ms`); a no-op without windows. `bars_stored`: see
        `on_minute`."""
        if self.windows is None:
            return
        started = time.perf_counter()
        if stored is not None:
            self.windows.take_1m(stored)
        step = TIMEFRAME_MINUTES[self.config.primary_timeframe] * 60_000
        pending = self.watermark_ms + step if self.watermark_ms >= 0 else None
        self.windows.advance(
            conn, upto_ms=upto_ms, newest_ms=newest_ms, from_ms=pending, before_reads=bars_stored
        )
        metrics.LIVE_STAGE_DURATION.labels("state_update").observe(time.perf_counter() - started)

    def on_minute(
        self,
        conn: DbConn,
        *,
        upto_ms: int,
        stored: pd.DataFrame | None = None,
        newest_ms: dict[str, int | None] | None = None,
        bars_stored: Callable[[], None] | None = None,
    ) -> int:
        """The evaluation side of one minute (bars up to `upto_ms`): advance the windows
        from its bars, then evaluate every primary close due by `upto_ms`.

        `bars_stored`, when given, returns once the minute's bars are committed: the
        stream hands a complete minute over while it is still storing it, so this waits
        before anything reads bars from the database (a reseed) and before the signals
        are written; a signal is never stored ahead of its bars. Safe to retry: a bar
        already held is not taken twice, and closes at or before the watermark are
        skipped. Returns the signals written."""
        self.advance(
            conn, upto_ms=upto_ms, stored=stored, newest_ms=newest_ms, bars_stored=bars_stored
        )
        minutes = TIMEFRAME_MINUTES[self.config.primary_timeframe]
        closes = primary_closes(self.watermark_ms, upto_ms, minutes)
        return self.process_closes(conn, closes, bars_stored=bars_stored)

    def _bars(self, conn: DbConn, at: pd.Timestamp) -> dict[str, dict[str, pd.DataFrame]]:
        """symbol -> timeframe -> closed bars of the trailing window."""
        window = self.config.live_window_bars
        by_symbol: dict[str, dict[str, pd.DataFrame]] = {s: {} for s in self.symbols}
        for tf in self.config.timeframes:
            width = pd.Timedelta(minutes=TIMEFRAME_MINUTES[tf])
            frames = load_bars(
                conn,
                exchange=self.exchange,
                symbols=self.symbols,
                timeframe=tf,
                start=at - width * (window + 1),
                closed_by=at,
            )
            for symbol, frame in frames.items():
                by_symbol[symbol][tf] = frame
        return by_symbol

    @property
    def adaptive(self) -> bool:
        """Adaptive controls apply to the live run only (replays and backtests are pure)."""
        return self.run_id == LIVE_RUN

    def _controlled(self, control: SymbolControl | None) -> tuple[EngineConfig, str]:
        """Config and run id for a symbol: its own threshold; disabled ones go to shadow."""
        if control is None:
            return self.config, self.run_id
        config = self.config
        if control.score_threshold is not None:
            config = dataclasses.replace(config, signal_score_threshold=control.score_threshold)
        return config, self.run_id if control.enabled else SHADOW_RUN

    def _route(self, control: SymbolControl | None) -> tuple[float | None, str]:
        """(score threshold override, run id) of one strategy on one symbol."""
        _, run_id = self._controlled(control)
        return (None if control is None else control.score_threshold), run_id

    def close(self) -> None:
        """Nothing to stop: webhook deliveries live in the outbox table, not in this object."""

    def process_closes(
        self,
        conn: DbConn,
        closes_ms: list[int],
        *,
        bars_stored: Callable[[], None] | None = None,
    ) -> int:
        """Evaluate every primary close after the watermark; returns signals written.
        `bars_stored`: called before the first write (see `on_minute`)."""
        written = 0
        for close_ms in closes_ms:
            if close_ms <= self.watermark_ms:
                continue
            started = time.perf_counter()
            at = pd.Timestamp(close_ms * MS, tz="UTC")
            windows = self.windows.series(close_ms) if self.windows is not None else None
            bars = self._bars(conn, at) if windows is None else {}
            signal_filter, model_version = (
                self.ai_filter.current() if self.ai_filter else (None, None)
            )
            filters = {name: f.current() for name, f in self.strategy_filters.items()}
            controls = load_all_controls(conn, exchange=self.exchange) if self.adaptive else {}
            strategies = self.strategies or default_strategies(self.config)
            # symbols whose strategies share thresholds and runs are evaluated together
            # (usually all of them), every strategy over the same features
            groups: dict[tuple[tuple[float | None, str], ...], list[str]] = {}
            for symbol in self.symbols:
                key = tuple(self._route(controls.get(s.name, {}).get(symbol)) for s in strategies)
                groups.setdefault(key, []).append(symbol)
            signals: list[Signal] = []
            cooldown = _copy_cooldown(self.cooldown)  # committed only with the signals
            for routes, names in groups.items():
                common: dict[str, Any] = {
                    "at": at,
                    "state": cooldown,
                    "exchange": self.exchange,
                    "config": self.config,
                    "run_id": self.run_id,
                    "signal_filter": signal_filter,
                    "model_version": model_version,
                    "strategies": [
                        s.controlled(threshold)
                        for s, (threshold, _) in zip(strategies, routes, strict=True)
                    ],
                    "run_ids": {
                        s.name: run_id for s, (_, run_id) in zip(strategies, routes, strict=True)
                    },
                    "filters": filters,
                }
                if windows is not None:
                    chosen = {s: windows[s] for s in names}
                    signals.extend(evaluate_latest_series(chosen, **common))
                else:
                    signals.extend(evaluate_latest_batch({s: bars[s] for s in names}, **common))
            elapsed = time.perf_counter() - started
            metrics.LIVE_STAGE_DURATION.labels("compute").observe(elapsed)
            metrics.FEATURE_COMPUTATIONS.labels(self.config.primary_timeframe).inc(
                len(self.symbols)
            )
            metrics.FEATURE_DURATION.labels(self.config.primary_timeframe).observe(elapsed)
            for signal in signals:
                for event in signal.events:
                    metrics.EVENTS_DETECTED.labels(str(event.get("type"))).inc()
                metrics.SIGNALS_EMITTED.labels(
                    signal.symbol,
                    signal.direction,
                    signal.timeframe,
                    str(signal.mtf_aligned).lower(),
                    signal.strategy,
                ).inc()
            if bars_stored is not None:
                waited = time.perf_counter()
                bars_stored()
                metrics.LIVE_STAGE_DURATION.labels("bars_wait").observe(
                    time.perf_counter() - waited
                )
            if self.before_store is not None:
                self.before_store(conn, signals)
            stored_at = time.perf_counter()
            with conn.transaction():
                new = insert_signals(conn, signals)
                if self.webhook_urls:
                    enqueue_deliveries(
                        conn, signals, urls=self.webhook_urls, min_score=self.webhook_min_score
                    )
                self._write_watermark(conn, close_ms)
                if self.ai_filter is not None:  # /health shows a filter rejecting everything
                    self.ai_filter.report(conn, name=self.watermark_name)
            # committed: only now does the in-memory state move on
            metrics.LIVE_STAGE_DURATION.labels("store").observe(time.perf_counter() - stored_at)
            written += new
            self.cooldown, self.watermark_ms = cooldown, close_ms
            metrics.EVENT_PROCESSING.observe(time.perf_counter() - started)
        return written
