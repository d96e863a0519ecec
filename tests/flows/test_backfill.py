"""Backfill through ccxt from the simulator: exact, resumable, and calm under HTTP 429."""

from __future__ import annotations

import pandas as pd

from signalengine.simulator import Faults, running_simulator
from tests.utils.market import market_frame

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
ANCHOR_MS = int(pd.Timestamp("2025-04-10", tz="UTC").value // 1_000_000)


def _stored(db, symbol: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    rows = db.execute(
        "SELECT exchange, symbol, ts, open, high, low, close, volume FROM klines"
        " WHERE symbol = %s ORDER BY ts",
        (symbol,),
    ).fetchall()
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


async def test_backfill_is_exact_resumable_and_survives_rate_limits(
    db, prefect_harness, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.backfill import backfill

    faults = Faults(rest_429_every=4, retry_after_s=0)
    with running_simulator(symbols=SYMBOLS, speed=1, anchor_ms=ANCHOR_MS, faults=faults) as url:
        monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", url)
        monkeypatch.setenv("SIGNALENGINE_BACKFILL_REQUESTS_PER_SECOND", "50")
        first = await backfill(symbols=SYMBOLS[:2], since="2025-04-07", until="2025-04-08")
        assert first["inserted"] == 2 * 1440
        assert first["retries"] > 0  # every 4th request was answered 429
        # a wider second run only fetches what is missing, for every symbol in parallel
        second = await backfill(symbols=SYMBOLS, since="2025-04-07", until="2025-04-09")
    assert second["inserted"] == 1440 + 1440 + 2 * 1440
    by_symbol = {r["symbol"]: r for r in second["per_symbol"]}
    assert by_symbol["BTC/USDT"]["fetched"] == 1440  # resumed at 2025-04-08
    for symbol in SYMBOLS:
        stored = _stored(db, symbol)
        truth = market_frame(symbol, "2025-04-07", 2)
        pd.testing.assert_frame_equal(stored, truth, check_exact=True, check_dtype=False)
