"""Per-strategy reads over real HTTP and WebSocket: /signals, /performance/stats,
/by-strategy, /equity and the feed's subscribe filter."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.api.server import ApiServer
from tests.api.test_feed import next_of_type, receive, settle, signal_ids
from tests.utils.signals import (
    create_random_performance,
    create_random_signal,
    insert_signals,
    random_signal,
)

Conn = psycopg.Connection[Any]
T0 = datetime(2025, 4, 1, tzinfo=UTC)


def _settled(
    db: Conn, strategy: str, outcomes: list[str], **overrides: Any
) -> list[dict[str, Any]]:
    """One stored and settled signal per outcome, of `strategy`."""
    rows = []
    for i, outcome in enumerate(outcomes):
        signal = create_random_signal(
            db,
            ts=T0 + timedelta(minutes=5 * i),
            strategy=strategy,
            strategy_version="v1",
            **overrides,
        )
        create_random_performance(db, signal, outcome=outcome, strategy=strategy)
        rows.append(signal)
    return rows


def test_signals_filter_by_strategy(client: httpx.Client, db: Conn) -> None:
    # the same bar and direction from two strategies: both stored (the key has the strategy)
    a = create_random_signal(db, ts=T0, direction="long", symbol="BTC/USDT")
    b = create_random_signal(
        db, ts=T0, direction="long", symbol="BTC/USDT", strategy="donchian", strategy_version="h1"
    )
    everything = client.get("/signals").json()["signals"]
    assert {s["id"] for s in everything} == {str(a["id"]), str(b["id"])}
    default = client.get("/signals", params={"strategy": "default"}).json()["signals"]
    assert [(s["id"], s["strategy"], s["strategy_version"]) for s in default] == [
        (str(a["id"]), "default", None)
    ]
    other = client.get("/signals", params={"strategy": "donchian"}).json()["signals"]
    assert [(s["id"], s["strategy"], s["strategy_version"]) for s in other] == [
        (str(b["id"]), "donchian", "h1")
    ]


def test_stats_separate_strategies(client: httpx.Client, db: Conn) -> None:
    _settled(db, "default", ["tp_hit", "tp_hit", "tp_hit", "sl_hit"])
    _settled(db, "donchian", ["sl_hit", "sl_hit", "tp_hit"])
    one = client.get("/performance/stats", params={"strategy": "default"}).json()
    other = client.get("/performance/stats", params={"strategy": "donchian"}).json()
    both = client.get("/performance/stats").json()
    assert (one["strategy"], one["count"], one["wins"], one["losses"]) == ("default", 4, 3, 1)
    assert (other["strategy"], other["count"], other["wins"], other["losses"]) == (
        "donchian",
        3,
        1,
        2,
    )
    assert (both["strategy"], both["count"]) == (None, 7)
    side_by_side = client.get("/performance/by-strategy").json()
    assert [(r["strategy"], r["count"], r["wins"]) for r in side_by_side] == [
        ("default", 4, 3),
        ("donchian", 3, 1),
    ]
    assert side_by_side[0]["win_rate"] == pytest.approx(0.75)
    curve = client.get("/performance/equity", params={"strategy": "donchian"}).json()
    assert curve["count"] == 3
    by_symbol = client.get("/performance/by-symbol", params={"strategy": "donchian"}).json()
    assert sum(r["count"] for r in by_symbol) == 3


@pytest.mark.parametrize("bad", ["Default", "has space", "x" * 65, "-lead", "a/b"])
@pytest.mark.parametrize("path", ["/signals", "/performance/stats", "/performance/equity"])
def test_malformed_strategy_is_a_422(client: httpx.Client, path: str, bad: str) -> None:
    response = client.get(path, params={"strategy": bad})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "strategy"]


async def test_feed_subscribe_filters_by_strategy(api: ApiServer, db: Conn) -> None:
    async with connect(api.ws_url) as ws:
        assert (await receive(ws))["type"] == "connected"
        await ws.send(json.dumps({"type": "subscribe", "strategies": ["donchian"]}))
        await settle(ws)
        rows = [
            random_signal(strategy="default"),
            random_signal(strategy="donchian", strategy_version="h1"),
            random_signal(strategy="other"),
        ]
        insert_signals(db, rows)  # one transaction: notified in this order
        wanted = str(rows[1]["id"])
        assert await signal_ids(ws, {wanted}) == [wanted]
        # a malformed strategy name is dropped like any invalid message: the filter stays
        await ws.send(json.dumps({"type": "subscribe", "strategies": ["Bad Name"]}))
        await settle(ws)
        later = [random_signal(strategy="default"), random_signal(strategy="donchian")]
        insert_signals(db, later)
        message = await next_of_type(ws, "signal")
    assert (message["data"]["id"], message["data"]["strategy"]) == (str(later[1]["id"]), "donchian")


def test_metrics_label_strategies(client: httpx.Client, db: Conn) -> None:
    def samples() -> dict[tuple[str, str], float]:
        """(family sample, strategy) -> value summed over the other labels."""
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(client.get("/metrics").text):
            for sample in family.samples:
                if "strategy" in sample.labels:
                    key = (sample.name, sample.labels["strategy"])
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    def generated(found: dict[tuple[str, str], float], strategy: str) -> float:
        """Counted since the test began (the replica lives for the whole session)."""
        key = ("signals_generated_total", strategy)
        return found.get(key, 0.0) - before.get(key, 0.0)

    before = samples()
    _settled(db, "default", ["tp_hit", "sl_hit", "sl_hit", "sl_hit"], symbol="ETH/USDT")
    _settled(db, "donchian", ["tp_hit", "tp_hit", "tp_hit", "sl_hit"], symbol="ETH/USDT")
    deadline = time.monotonic() + 5
    found = samples()
    while generated(found, "donchian") < 4 or generated(found, "default") < 4:  # LISTEN
        assert time.monotonic() < deadline
        time.sleep(0.05)
        found = samples()
    assert (generated(found, "default"), generated(found, "donchian")) == (4, 4)
    assert found[("signal_win_rate", "default")] == pytest.approx(0.25)
    assert found[("signal_win_rate", "donchian")] == pytest.approx(0.75)
    assert ("signal_sharpe", "donchian") in found
    legacy = client.get("/metrics/legacy").json()
    assert legacy["by_strategy"]["donchian"]["ETH/USDT"]["win_rate"] == pytest.approx(0.75)
    assert legacy["by_symbol"]["ETH/USDT"]["win_rate"] == pytest.approx(0.25)  # the default's


def test_controls_are_listed_per_strategy(client: httpx.Client, db: Conn) -> None:
    from signalengine.tasks.outcomes.controls import SymbolControl, save_controls

    save_controls(db, {"BTC/USDT": SymbolControl(False, "poor", 0.7)}, exchange="binance")
    save_controls(
        db, {"BTC/USDT": SymbolControl(True, None, None)}, exchange="binance", strategy="donchian"
    )
    body = client.get("/controls").json()
    assert [(c["strategy"], c["symbol"], c["enabled"]) for c in body] == [
        ("default", "BTC/USDT", False),
        ("donchian", "BTC/USDT", True),
    ]
    only = client.get("/controls", params={"strategy": "donchian"}).json()
    assert [(c["strategy"], c["enabled"]) for c in only] == [("donchian", True)]
    assert client.get("/controls", params={"strategy": "Bad"}).status_code == 422
