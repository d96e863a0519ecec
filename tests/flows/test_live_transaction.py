"""Live evaluation is transactional: a connection lost between evaluation and insert
changes nothing; the retry stores exactly the signals an unfaulted run stores."""

from __future__ import annotations

import pandas as pd
import psycopg
from prefect import flow

from signalengine.core.config import Settings
from signalengine.core.dbconn import ReconnectingConnection
from signalengine.tasks.runs.live import LiveEngine
from tests.utils.market import store_market

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
START = "2025-02-03"
# cooldown > 0: the engine's cooldown state is what a half-done attempt used to corrupt
SETTINGS = Settings(symbols=SYMBOLS, signal_score_threshold=0.3, mtf_min_aligned=1, cooldown_bars=3)
COLUMNS = (
    "id, run_id, symbol, timeframe, direction, ts, emitted_at, entry_price, take_profit,"
    " stop_loss, expires_at, score, events, mtf_aligned, mtf_score, mtf_details, features"
)


@flow
async def _emit(db: ReconnectingConnection, engine: LiveEngine, closes: list[int]) -> int:
    """The stream's own task (with its Prefect retries), inside a flow run."""
    from signalengine.flows.stream import emit_signals

    return await emit_signals(db, engine, closes_ms=closes)


def _closes() -> list[int]:
    first = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=3)
    return [int((first + pd.Timedelta(minutes=5 * i)).value // 1_000_000) for i in range(1, 145)]


def _signals(db) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return db.execute(f"SELECT {COLUMNS} FROM signals WHERE run_id = 'tx' ORDER BY id").fetchall()


async def test_connection_killed_between_evaluation_and_insert(
    db, database_url, prefect_harness
) -> None:  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, START, 4)
    closes = _closes()
    # control: an unfaulted run
    control = ReconnectingConnection(database_url)
    engine = LiveEngine.start(
        control.get(), settings=SETTINGS, symbols=SYMBOLS, run_id="tx", shard=None
    )
    assert await _emit(control, engine, closes) > 0
    expected = _signals(db)
    control.close()
    assert len(expected) >= 3
    db.execute("DELETE FROM signals WHERE run_id = 'tx'")
    db.execute("DELETE FROM stream_watermarks")

    # faulted: the first two closes that produce signals lose their connection after
    # evaluation, before the INSERT; the Prefect task retry reconnects and goes on
    faulted = ReconnectingConnection(database_url)
    engine = LiveEngine.start(
        faulted.get(), settings=SETTINGS, symbols=SYMBOLS, run_id="tx", shard=None
    )
    kills: list[int] = []

    def kill_connection(conn, signals) -> None:  # type: ignore[no-untyped-def]
        if signals and len(kills) < 2:
            with psycopg.connect(database_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            kills.append(len(signals))

    engine.before_store = kill_connection
    written = await _emit(faulted, engine, closes)
    faulted.close()
    assert len(kills) == 2  # both faults really hit a close with signals
    got = _signals(db)
    assert written == len(got)
    assert got == expected  # same ids, same values: nothing lost, nothing doubled
    mark = db.execute("SELECT ts FROM stream_watermarks").fetchone()["ts"]
    assert int(pd.Timestamp(mark).value // 1_000_000) == closes[-1]
