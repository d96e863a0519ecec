"""REST routes over real HTTP against the session database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest

from signalengine.api.main import create_app
from signalengine.tasks.engine.features import compute_features
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from tests.api.conftest import api_settings
from tests.utils.klines import random_klines
from tests.utils.signals import create_random_signal

Conn = psycopg.Connection[Any]
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _signals(db: Conn, n: int, **overrides: Any) -> list[dict[str, Any]]:
    return [
        create_random_signal(db, ts=T0 + timedelta(minutes=5 * i), **overrides) for i in range(n)
    ]


def test_health_reports_database_and_version(client: httpx.Client) -> None:
    body = client.get("/health").json()
    # issue 15 added `ai_filter` (no stream has reported in this test: unknown)
    assert body == {
        "status": "ok",
        "database": True,
        "feed": True,
        "ingest": {
            "status": "unknown",
            "lag_seconds": None,
            "newest_close": None,
            "exchange_time": None,
        },
        "ai_filter": {"status": "unknown", "model_version": None, "scored": 0, "passed": 0},
        "version": body["version"],
    }
    assert body["version"]


def test_signals_are_listed_newest_first(client: httpx.Client, db: Conn) -> None:
    stored = _signals(db, 5)
    body = client.get("/signals").json()
    assert [s["id"] for s in body["signals"]] == [str(s["id"]) for s in reversed(stored)]
    assert body["next_cursor"] is None
    first = body["signals"][0]
    assert first["emitted_at"].endswith("Z") or first["emitted_at"].endswith("+00:00")
    assert first["mtf_details"] == stored[-1]["mtf_details"]


@pytest.mark.parametrize("spelling", ["BTCUSDT", "btcusdt", "BTC-USDT", "BTC/USDT"])
def test_symbol_filter_accepts_every_spelling(
    client: httpx.Client, db: Conn, spelling: str
) -> None:
    btc = _signals(db, 2, symbol="BTC/USDT")
    _signals(db, 2, symbol="ETH/USDT")
    items = client.get("/signals", params={"symbol": spelling}).json()["signals"]
    assert {s["id"] for s in items} == {str(s["id"]) for s in btc}


def test_filters_combine(client: httpx.Client, db: Conn) -> None:
    long_5m = _signals(db, 3, direction="long", timeframe="5m")
    _signals(db, 2, direction="short", timeframe="5m")
    _signals(db, 2, direction="long", timeframe="15m")
    create_random_signal(db, run_id="backtest-1", direction="long", timeframe="5m")
    items = client.get("/signals", params={"direction": "long", "timeframe": "5m"}).json()[
        "signals"
    ]
    assert {s["id"] for s in items} == {str(s["id"]) for s in long_5m}
    since = (T0 + timedelta(minutes=5 * 1 + 5)).isoformat()
    items = client.get(
        "/signals", params={"direction": "long", "timeframe": "5m", "since": since}
    ).json()["signals"]
    assert {s["id"] for s in items} == {str(s["id"]) for s in long_5m[1:]}
    backtest = client.get("/signals", params={"run_id": "backtest-1"}).json()["signals"]
    assert [s["run_id"] for s in backtest] == ["backtest-1"]


def test_cursor_and_offset_pages_cover_everything_once(client: httpx.Client, db: Conn) -> None:
    stored = _signals(db, 7)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get("/signals", params=params).json()
        seen += [s["id"] for s in page["signals"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [str(s["id"]) for s in reversed(stored)]
    second = client.get("/signals", params={"limit": 3, "offset": 3}).json()["signals"]
    assert [s["id"] for s in second] == seen[3:6]


def test_one_signal_by_id(client: httpx.Client, db: Conn) -> None:
    stored = create_random_signal(db)
    body = client.get(f"/signals/{stored['id']}").json()
    assert body["id"] == str(stored["id"])
    assert body["entry_price"] == pytest.approx(stored["entry_price"])
    missing = client.get("/signals/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "signal not found"}


@pytest.mark.parametrize(
    "path",
    [
        "/signals?limit=0",
        "/signals?limit=1001",
        "/signals?limit=abc",
        "/signals?direction=up",
        "/signals?timeframe=2h",
        "/signals?since=yesterday",
        "/signals?symbol=NOTAPAIR",
        "/signals?offset=-1",
        "/signals/not-a-uuid",
        "/klines/BTCUSDT?timeframe=2h",
        "/klines/BTCUSDT?timeframe=5m&limit=0",
        "/klines/NOPE",
        "/features/BTCUSDT?timeframe=7m",
        "/performance/stats?direction=sideways",
        "/performance/stats?lookback_days=0",
        "/performance/stats?lookback_days=-3",
        "/performance/stats?symbol=%00",
        "/performance/equity?points=1",
    ],
)
def test_bad_parameters_get_422_json(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_a_foreign_cursor_gets_400_json(client: httpx.Client) -> None:
    response = client.get("/signals", params={"cursor": "not-ours"})
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid cursor"}


def _store_bars(db: Conn, frame: pd.DataFrame) -> None:
    store_klines(db, validate_klines(frame), timeframes=["1m", "5m", "15m", "1h"])


def _resample(frame: pd.DataFrame, rule: str) -> pd.DataFrame:
    bars = frame.set_index("ts")[["open", "high", "low", "close", "volume"]]
    out = bars.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    out["bars"] = bars["close"].resample(rule, label="left", closed="left").count()
    return out.dropna()


@pytest.mark.parametrize("spelling", ["BTCUSDT", "btc-usdt", "BTC/USDT"])
def test_klines_match_an_independent_resample(
    client: httpx.Client, db: Conn, spelling: str
) -> None:
    frame = random_klines(minutes=180 + 3, seed=3)  # the last 15m bucket is still forming
    _store_bars(db, frame)
    body = client.get(f"/klines/{spelling}", params={"timeframe": "15m", "limit": 5}).json()
    expected = _resample(frame, "15min").tail(5)
    assert body["symbol"] == "BTC/USDT" and body["timeframe"] == "15m"
    got = pd.DataFrame(body["klines"])
    assert list(pd.to_datetime(got["ts"])) == list(expected.index)
    for column in ("open", "high", "low", "close", "volume", "bars"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-12)
    assert got["bars"].iloc[-1] == 3


def test_features_use_closed_bars_only(client: httpx.Client, db: Conn) -> None:
    frame = random_klines(minutes=3 * 1440 + 2, seed=5)  # two 1m bars of a forming 5m bucket
    _store_bars(db, frame)
    body = client.get("/features/BTCUSDT", params={"timeframe": "5m"}).json()
    closed = _resample(frame, "5min").iloc[:-1].tail(500)
    expected = compute_features(closed[["open", "high", "low", "close", "volume"]]).iloc[-1]
    assert pd.Timestamp(body["ts"]) == closed.index[-1]
    assert body["bars_used"] == 500
    for name in ("ema_12", "rsi_14", "atr_14", "macd", "bb_upper", "volume_z"):
        assert body["features"][name] == pytest.approx(float(expected[name]), rel=1e-9)


def test_features_without_bars_are_404(client: httpx.Client) -> None:
    response = client.get("/features/DOGEUSDT", params={"timeframe": "1h"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no closed bars for this symbol"}


def test_unknown_query_parameters_are_422(client: httpx.Client) -> None:
    response = client.get("/signals", params={"symbl": "BTCUSDT"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "symbl"]


async def test_cors_preflight_follows_the_settings(database_url: str) -> None:
    settings = api_settings(database_url, cors_origins=["https://grafana.example"])
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        for origin, allowed in (("https://grafana.example", True), ("https://evil.example", False)):
            response = await http.options(
                "/signals", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
            )
            assert ("access-control-allow-origin" in response.headers) is allowed


def test_controls_show_disabled_symbols_with_reason(client, db) -> None:  # type: ignore[no-untyped-def]
    from signalengine.tasks.outcomes.controls import SymbolControl, save_controls

    save_controls(
        db,
        {
            "BAD/USDT": SymbolControl(False, "win rate 20.0% over 40 signals", 0.7),
            "OK/USDT": SymbolControl(True, None, None),
        },
        exchange="binance",
    )
    body = client.get("/controls").json()
    assert [(c["symbol"], c["enabled"]) for c in body] == [("BAD/USDT", False), ("OK/USDT", True)]
    assert body[0]["reason"].startswith("win rate") and body[0]["score_threshold"] == 0.7
    assert client.get("/controls", params={"exchange": "\x00"}).status_code == 422


def test_kline_series_on_the_columnar_path_answer_what_the_row_reads_did(
    client: httpx.Client, db: Conn
) -> None:
    """/klines and /features read arrays now; their JSON equals the answers built from rows."""
    import asyncio

    from psycopg.rows import dict_row

    from signalengine.api.db.klines import closed_klines, latest_klines
    from signalengine.api.schemas import Kline

    frame = random_klines(minutes=1440 + 7, seed=11)  # a forming 5m and 15m bucket at the end
    _store_bars(db, frame)

    async def rows(timeframe: str, limit: int, closed: bool) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(db.info.dsn, row_factory=dict_row) as conn:
            read = closed_klines if closed else latest_klines
            kw = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": timeframe}
            return await read(conn=conn, **kw, limit=limit)

    for timeframe, limit in (("1m", 50), ("5m", 5000), ("15m", 7), ("1h", 3)):
        body = client.get("/klines/BTCUSDT", params={"timeframe": timeframe, "limit": limit})
        old = [
            Kline.model_validate(r).model_dump(mode="json")
            for r in asyncio.run(rows(timeframe, limit, False))
        ]
        assert len(old) > 0 and body.json()["klines"] == old
    closed = asyncio.run(rows("5m", 500, True))
    bars = pd.DataFrame(closed).set_index("ts")[["open", "high", "low", "close", "volume"]]
    expected = compute_features(bars).iloc[-1]
    body = client.get("/features/BTCUSDT", params={"timeframe": "5m"}).json()
    assert body["bars_used"] == len(closed)
    assert pd.Timestamp(body["ts"]) == pd.Timestamp(closed[-1]["ts"])
    for name, value in expected.items():
        got = body["features"][str(name)]
        assert got == (float(value) if np.isfinite(value) else None)
