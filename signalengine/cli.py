"""The `signalengine` command line. Jobs print one JSON summary line last on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from signalengine.core.config import get_settings
from signalengine.core.errors import SignalEngineError
from signalengine.core.telemetry import disable_telemetry
from signalengine.core.vocabulary import LIVE_RUN

app = typer.Typer(help="SignalEngine: klines in, scored signals out.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
strategy_app = typer.Typer(
    help="Strategies: prove them unbiased before they run.", no_args_is_help=True
)
app.add_typer(strategy_app, name="strategy")


def _summary(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, default=str))


def _fail(error: Exception) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


def _check_strategies() -> None:
    """A bad SIGNALENGINE_STRATEGIES fails here in one line (exit 2), before any flow runs."""
    from signalengine.tasks.engine.config import EngineConfig
    from signalengine.tasks.engine.loader import load_strategies

    settings = get_settings()
    try:
        load_strategies(settings.strategies, EngineConfig.from_settings(settings))
    except SignalEngineError as error:
        _fail(error)


def _symbols(value: str) -> list[str]:
    from signalengine.core.symbols import normalize_symbol

    return [normalize_symbol(s.strip()) for s in value.split(",") if s.strip()]


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (safe to run twice)."""
    from signalengine.core.db import database_url
    from signalengine.tasks.marketdata.timeframes import upgrade_with_timeframes

    applied = upgrade_with_timeframes(database_url(), get_settings().timeframes)
    _summary({"applied": applied})


@strategy_app.command("check")
def strategy_check(
    name: Annotated[str, typer.Argument(help="Name in SIGNALENGINE_STRATEGIES, or a class.")],
    symbols: Annotated[
        str, typer.Option(help="Comma-separated; default: the first 3 configured.")
    ] = "",
    start: Annotated[str, typer.Option(help="ISO start (UTC); default end - 7 days.")] = "",
    end: Annotated[str, typer.Option(help="ISO end (UTC), exclusive; default newest bar.")] = "",
    exchange: Annotated[str, typer.Option()] = "",
    params: Annotated[str, typer.Option(help="JSON params for a class NAME.")] = "",
    cuts: Annotated[int, typer.Option(min=1, max=50, help="Lookahead cut points.")] = 5,
) -> None:
    """Lookahead, warm-up, live/backtest parity and determinism on stored klines.

    Report on stderr, the JSON verdict last on stdout; exit 0 passed, 1 failed, 2 bad input.
    """
    import psycopg

    from signalengine.core.db import connect
    from signalengine.tasks.engine.config import EngineConfig
    from signalengine.tasks.runs.strategy_gate import (
        DEFAULT_CHECK_SYMBOLS,
        check_stored,
        check_window,
        format_report,
        resolve_strategy,
    )

    settings = get_settings()
    venue = exchange or settings.exchange
    try:
        config = EngineConfig.from_settings(settings)
        strategy = resolve_strategy(
            name, configured=settings.strategies, config=config, params=params or None
        )
        chosen = _symbols(symbols) if symbols else settings.symbols[:DEFAULT_CHECK_SYMBOLS]
        with connect() as conn:
            window = check_window(conn, exchange=venue, symbols=chosen, start=start, end=end)
            verdict = check_stored(
                conn,
                strategy,
                exchange=venue,
                symbols=chosen,
                start=window[0],
                end=window[1],
                cuts=cuts,
            )
    except psycopg.errors.UndefinedTable as error:
        _fail(ValueError(f"{error.diag.message_primary}: run `signalengine db upgrade`"))
    except (ValueError, SignalEngineError) as error:
        _fail(error)
    typer.echo(format_report(verdict), err=True)
    _summary(verdict)
    raise typer.Exit(code=0 if verdict["passed"] else 1)


@app.command("import")
def import_file(
    path: Path,
    exchange: Annotated[str, typer.Option(help="Exchange id the bars belong to.")] = "binance",
    symbol: Annotated[str, typer.Option(help="Symbol, e.g. BTC/USDT or BTCUSDT.")] = "BTC/USDT",
) -> None:
    """Import 1m klines from Parquet or CSV (ts, open, high, low, close, volume)."""
    from signalengine.core.db import connect, database_url
    from signalengine.tasks.marketdata.files import read_klines_file
    from signalengine.tasks.marketdata.klines import store_klines
    from signalengine.tasks.marketdata.timeframes import upgrade_with_timeframes
    from signalengine.tasks.marketdata.validation import validate_klines

    try:
        frame = read_klines_file(path, exchange=exchange, symbol=_symbols(symbol)[0])
    except (OSError, ValueError) as error:
        _fail(error)
    upgrade_with_timeframes(database_url(), get_settings().timeframes)
    with connect() as conn:
        result = store_klines(
            conn, validate_klines(frame), timeframes=get_settings().timeframes, source="import"
        )
    _summary(result.as_dict())


@app.command("export")
def export_file(
    path: Path,
    exchange: Annotated[str, typer.Option()] = "binance",
    symbol: Annotated[str, typer.Option()] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option()] = "1m",
) -> None:
    """Export stored bars of one symbol and timeframe to Parquet or CSV (with `bars`)."""
    import psycopg

    from signalengine.core.db import connect
    from signalengine.tasks.marketdata.files import write_klines_file
    from signalengine.tasks.marketdata.klines import load_bars

    configured = get_settings().timeframes
    if timeframe not in configured:
        _fail(ValueError(f"unknown timeframe {timeframe!r}; configured: {', '.join(configured)}"))
    try:
        sym = _symbols(symbol)[0]
        with connect() as conn:
            bars = load_bars(conn, exchange=exchange, symbols=[sym], timeframe=timeframe).get(sym)
        if bars is None or bars.empty:
            raise ValueError(f"no stored {timeframe} bars of {sym} on {exchange}: nothing written")
        write_klines_file(bars.reset_index(), path)
    except psycopg.errors.UndefinedTable as error:
        _fail(ValueError(f"{error.diag.message_primary}: run `signalengine db upgrade`"))
    except ValueError as error:
        _fail(error)
    _summary({"path": str(path), "rows": len(bars), "symbol": sym, "timeframe": timeframe})


@app.command("sim")
def sim(
    port: Annotated[int, typer.Option()] = 0,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 0.0,
    symbols: Annotated[str, typer.Option()] = "",
    seed: Annotated[int | None, typer.Option(help="Market seed.")] = None,
    anchor_ms: Annotated[int | None, typer.Option(help="Sim time at start (epoch ms).")] = None,
    ws_drop_every: Annotated[float | None, typer.Option(help="Drop WS every N s.")] = None,
    duplicate_rate: Annotated[float, typer.Option()] = 0.0,
    out_of_order_rate: Annotated[float, typer.Option()] = 0.0,
    malformed_rate: Annotated[float, typer.Option()] = 0.0,
    rest_429_every: Annotated[int | None, typer.Option()] = None,
    exchange: Annotated[
        str, typer.Option(help="Dialect: binance or bybit (Bybit v5); each has its own seed.")
    ] = "binance",
) -> None:
    """Run the exchange simulator on 127.0.0.1 (Binance's protocol, or Bybit v5's)."""
    from signalengine.simulator import DIALECTS, Faults, serve, venue_seed

    settings = get_settings()
    if exchange not in DIALECTS:
        _fail(ValueError(f"unknown dialect {exchange!r}; use one of {', '.join(DIALECTS)}"))
    faults = Faults(
        ws_drop_every_s=ws_drop_every,
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
        malformed_rate=malformed_rate,
        rest_429_every=rest_429_every,
    )
    serve(
        host="127.0.0.1",
        port=port or settings.sim_port,
        symbols=_symbols(symbols) if symbols else settings.symbols,
        seed=venue_seed(exchange, settings.sim_seed) if seed is None else seed,
        speed=speed or settings.sim_speed,
        faults=faults,
        anchor_ms=anchor_ms,
        log_level="warning",
        exchange=exchange,
    )


@app.command("api")
def api(
    host: Annotated[str, typer.Option()] = "",
    port: Annotated[int, typer.Option()] = 0,
) -> None:
    """Serve the REST API, WebSocket feed, metrics and dashboard."""
    from signalengine.api.main import serve

    settings = get_settings()
    serve(host=host or settings.api_host, port=port or settings.api_port)


def _stream_venues(exchange: str, symbols: str) -> list[str]:
    """The exchanges a `stream` command runs: the one asked for, else every configured one."""
    settings = get_settings()
    ids = (
        [settings.for_exchange(exchange).exchange]
        if exchange
        else [v.id for v in settings.venues()]
    )
    if symbols and len(ids) > 1:
        raise ValueError("--symbols needs --exchange when several exchanges are configured")
    return ids


@app.command("stream")
def stream(
    symbols: Annotated[str, typer.Option(help="Comma-separated; default from settings.")] = "",
    shard: Annotated[str, typer.Option(help="i/n: this process takes its share.")] = "",
    source: Annotated[str, typer.Option(help="live or replay")] = LIVE_RUN,
    run_id: Annotated[
        str, typer.Option(help="Run id; replays default to replay-<start>.")
    ] = LIVE_RUN,
    start: Annotated[str, typer.Option(help="Replay: ISO start (UTC).")] = "",
    end: Annotated[str, typer.Option(help="Replay: ISO end (UTC), exclusive.")] = "",
    exchange: Annotated[
        str, typer.Option(help="One configured exchange; default: every configured one.")
    ] = "",
    allow_unchecked: Annotated[
        bool,
        typer.Option(
            "--allow-unchecked",
            help="Run strategies without a passing `strategy check` (logged and recorded).",
        ),
    ] = False,
) -> None:
    """Run the streaming flow live, or replay stored klines through it as fast as it can.

    With several exchanges configured (SIGNALENGINE_EXCHANGES) one flow run per exchange
    runs concurrently in this process, each with its own ccxt client and watermarks.
    """
    import asyncio

    from prefect import tags
    from prefect.exceptions import CancelledRun
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from signalengine.flows.stream import stream as stream_flow

    _check_strategies()
    try:
        venues = _stream_venues(exchange, symbols)
    except ValueError as error:
        _fail(error)

    async def run_all() -> list[Any]:
        runs = [
            stream_flow(
                exchange=venue,
                symbols=_symbols(symbols) if symbols else None,
                shard=shard or None,
                source=source,
                run_id=run_id,
                start=start or None,
                end=end or None,
                allow_unchecked=allow_unchecked,
            )
            for venue in venues
        ]
        # each exchange's run ends on its own; one failing does not stop the others
        return list(await asyncio.gather(*runs, return_exceptions=True))

    # Heartbeats every 30 s and the `signalengine` tag: a run whose process is killed is
    # then marked Crashed by the zombie automation (automations.yaml) instead of staying
    # Running forever; the deployment's runs get both from prefect.yaml and the worker.
    beat = PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: min(beat or 30, 30)}),
        tags("signalengine", "stream"),
    ):
        results = asyncio.run(run_all())
    summaries: dict[str, Any] = {}
    for venue, result in zip(venues, results, strict=True):
        if isinstance(result, ValueError):
            _fail(result)
        if isinstance(result, CancelledRun):  # cancelled from the Prefect UI: a clean stop
            summaries[venue] = {"cancelled": True, "message": str(result)}
        elif isinstance(result, BaseException):
            raise result
        else:
            summaries[venue] = result if isinstance(result, dict) else {"state": str(result)}
    _summary(summaries[venues[0]] if len(venues) == 1 else {"exchanges": summaries})


@app.command("backfill")
def backfill(
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "",
    since: Annotated[str, typer.Option(help="ISO start (UTC).")] = "",
    until: Annotated[str, typer.Option(help="ISO end (UTC), exclusive.")] = "",
    exchange: Annotated[str, typer.Option()] = "",
) -> None:
    """Fetch history over REST (resumable, idempotent, rate limited)."""
    import asyncio

    import ccxt
    import pandas as pd

    from signalengine.flows.backfill import backfill as backfill_flow
    from signalengine.tasks.marketdata.markets import unlisted_symbols

    settings = get_settings().for_job(exchange or None)  # a configured venue: its URL
    venue = settings.exchange
    # checked before the flow starts, so that a bad argument is one line, not a failed run
    try:
        chosen = _symbols(symbols) if symbols else settings.symbols
        if since and until and pd.Timestamp(since, tz="UTC") >= pd.Timestamp(until, tz="UTC"):
            raise ValueError(f"--since {since} must be before --until {until}")
        missing = asyncio.run(
            unlisted_symbols(chosen, exchange=venue, base_url=settings.exchange_url)
        )
        if missing:
            raise ValueError(f"{venue} lists no market {', '.join(missing)}")
    except ccxt.BaseError as error:
        _fail(ValueError(f"cannot read the markets of {venue}: {error}"))
    except ValueError as error:
        _fail(error)
    try:
        summary = asyncio.run(
            backfill_flow(
                symbols=chosen,
                since=since or None,
                until=until or None,
                exchange=exchange or None,
            )
        )
    except ValueError as error:
        _fail(error)
    _summary(summary)


@app.command("backtest")
def backtest(
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "",
    start: Annotated[str, typer.Option(help="ISO start (UTC).")] = "",
    end: Annotated[str, typer.Option(help="ISO end (UTC), exclusive.")] = "",
    exchange: Annotated[str, typer.Option()] = "",
    run_id: Annotated[str, typer.Option()] = "",
    out: Annotated[str, typer.Option(help="Folder for report.html and charts.")] = "",
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Dask LocalCluster workers (0: chunks run in this process, unless"
            " SIGNALENGINE_DASK_ADDRESS names a cluster).",
        ),
    ] = 0,
    chunk_size: Annotated[
        int, typer.Option(min=0, help="Symbols per chunk (0: SIGNALENGINE_BACKTEST_CHUNK_SYMBOLS).")
    ] = 0,
) -> None:
    """Replay stored klines through the engine; store, summarize and report."""
    from signalengine.flows.backtest import run_backtest_flow

    _check_strategies()
    try:
        summary = run_backtest_flow(
            workers=workers or None,
            symbols=_symbols(symbols) if symbols else None,
            start=start or None,
            end=end or None,
            exchange=exchange or None,
            run_id=run_id or None,
            out=out or None,
            chunk_size=chunk_size or None,
        )
    except ValueError as error:
        _fail(error)
    _summary(summary)


@app.command("optimize")
def optimize(
    name: Annotated[str, typer.Argument(help="Name in SIGNALENGINE_STRATEGIES, or a class.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=LOW:HIGH[:STEP|log], KEY=a,b,c or KEY=VALUE (repeat); default: the"
            " strategy's declared tunable params."
        ),
    ] = None,
    symbols: Annotated[str, typer.Option(help="Comma-separated; default from settings.")] = "",
    start: Annotated[str, typer.Option(help="ISO start (UTC); default end - 30 days.")] = "",
    end: Annotated[str, typer.Option(help="ISO end (UTC), exclusive; default newest bar.")] = "",
    exchange: Annotated[str, typer.Option()] = "",
    trials: Annotated[int, typer.Option(min=1, help="Trials of the study in total.")] = 20,
    workers: Annotated[
        int, typer.Option(min=0, help="Dask LocalCluster workers for trials (0: here).")
    ] = 0,
    study: Annotated[str, typer.Option(help="Optuna study name; default from the request.")] = "",
    folds: Annotated[int, typer.Option(min=1, help="Walk-forward test windows.")] = 3,
    min_trades: Annotated[
        int, typer.Option(min=1, help="Fewer settled trades in a fold: trial pruned.")
    ] = 5,
    out: Annotated[str, typer.Option(help="Best params file (default: state dir).")] = "",
) -> None:
    """Search a strategy's params (Optuna on PostgreSQL, walk-forward out-of-sample Sharpe)."""
    from signalengine.flows.optimize import build_job, run_optimize_flow

    try:
        job = build_job(
            name,
            param or [],
            settings=get_settings(),
            symbols=_symbols(symbols) if symbols else None,
            start=start or None,
            end=end or None,
            exchange=exchange or None,
            folds=folds,
            min_trades=min_trades,
        )
        summary = run_optimize_flow(
            workers=workers or None, job=job, trials=trials, study=study or None, out=out or None
        )
    except (ValueError, SignalEngineError) as error:
        _fail(error)
    _summary(summary)
    if summary["best_trial"] is None:  # every trial pruned or failed: nothing to write
        typer.echo(
            "no trial completed (pruned under --min-trades or failed): widen the window,"
            " lower --min-trades or change the space",
            err=True,
        )
        raise typer.Exit(code=1)


@app.command("settle")
def settle(
    run_ids: Annotated[str, typer.Option(help="Comma-separated runs.")] = "live,shadow",
) -> None:
    """Settle open signals whose outcome is known."""
    from signalengine.flows.settle import settle as settle_flow

    _summary(settle_flow(run_ids=[r for r in run_ids.split(",") if r]))


@app.command("rollups")
def rollups() -> None:
    """Recompute the performance rollups."""
    from signalengine.flows.rollups import rollups as rollups_flow

    _summary(rollups_flow())


@app.command("retrain")
def retrain(
    lookback_days: Annotated[float, typer.Option(help="Days of klines to learn from.")] = 30.0,
    symbols: Annotated[str, typer.Option(help="Comma-separated; default from settings.")] = "",
    workers: Annotated[
        int, typer.Option(min=0, help="Dask LocalCluster workers for labelling (0: here).")
    ] = 0,
    strategies: Annotated[
        str,
        typer.Option(help="Comma-separated strategy names to retrain; default: all configured."),
    ] = "",
) -> None:
    """Train each strategy's LightGBM filter, log it to MLflow, promote it when it beats
    that strategy's champion."""
    from signalengine.flows.retrain import run_retrain_flow

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    _summary(
        run_retrain_flow(
            workers=workers or None,
            lookback_days=lookback_days,
            symbols=_symbols(symbols) if symbols else None,
            strategies=names or None,
        )
    )


@app.command("webhooks")
def webhooks(
    workers: Annotated[int, typer.Option(min=1, help="Delivery threads in this process.")] = 1,
) -> None:
    """Deliver the webhook outbox until Ctrl-C or SIGTERM (run as many as you like)."""
    import signal
    import threading

    from signalengine.core.db import database_url
    from signalengine.tasks.alerts.outbox import DeliveryPolicy, serve_outbox

    settings = get_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    delivered = serve_outbox(
        database_url(settings), DeliveryPolicy.from_settings(settings), workers=workers, stop=stop
    )
    _summary({"workers": workers, "delivered": delivered})


@app.command("schedule")
def schedule() -> None:
    """Serve the scheduled flows (settle, rollups, retrain) with Prefect's scheduler."""
    from signalengine.schedules import serve_schedules

    serve_schedules()


@app.command("automations")
def automations() -> None:
    """Create or update the Prefect automations (zombie runs, stream reruns)."""
    from signalengine.automations import apply_automations

    _summary({"applied": str(apply_automations())})


@app.command("up")
def up() -> None:
    """Start everything on this machine: database, Prefect, MLflow, simulator, stream, API."""
    from signalengine.supervisor import run_stack

    sys.exit(run_stack(get_settings()))


def main() -> None:
    """Entry point with telemetry off and our errors reported without a traceback.

    While `up` runs on this state dir, every other command uses its Prefect, MLflow,
    simulator and database (signalengine.stack; variables already set win).
    """
    from pydantic import ValidationError

    disable_telemetry()
    try:
        if sys.argv[1:2] != ["up"]:
            from signalengine.stack import use_running_stack

            use_running_stack(get_settings().state_dir.resolve())
        app()
    except SignalEngineError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except ValidationError as error:  # a bad SIGNALENGINE_* setting
        typer.echo(f"error: invalid settings: {_settings_errors(error)}", err=True)
        sys.exit(2)


def _settings_errors(error: Any) -> str:
    """Pydantic's errors in one line: `SIGNALENGINE_EXCHANGES[1].url: not an http(s) URL`."""
    parts = []
    for item in error.errors():
        loc = [str(p) for p in item.get("loc", ())]
        name = f"SIGNALENGINE_{loc[0].upper()}" if loc else "settings"
        name += "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        parts.append(f"{name}: {str(item.get('msg', '')).removeprefix('Value error, ')}")
    return "; ".join(parts)
