"""The dashboard in headless Chromium: live signals, filters, charts, two widths."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from tests.api.conftest import API_TOKEN
from tests.api.server import ApiServer
from tests.utils.klines import random_klines
from tests.utils.signals import create_random_performance, create_random_signal

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
Conn = psycopg.Connection[Any]

# Counts pixels that differ from the canvas' first pixel (its background).
_INKED_PIXELS = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0) n += 1; }
  return n;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), "Debian's chromium is needed (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _seed(db: Conn) -> None:
    """Bars, signals and settled outcomes, so that every chart has something to draw."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    frame = random_klines(start=str(now - timedelta(hours=12)), minutes=12 * 60, seed=9)
    frame["ts"] = frame["ts"].dt.tz_convert("UTC")
    store_klines(db, validate_klines(frame), timeframes=["1m", "5m", "15m", "1h"])
    for i, symbol in enumerate(["BTC/USDT", "ETH/USDT", "BTC/USDT", "SOL/USDT", "ETH/USDT"]):
        signal = create_random_signal(
            db, symbol=symbol, ts=now - timedelta(hours=10 - i), direction="long"
        )
        create_random_performance(db, signal, outcome="tp_hit" if i % 2 == 0 else "sl_hit")


def test_dashboard_shows_live_signals_filters_and_charts(
    api: ApiServer, browser: Any, db: Conn
) -> None:
    _seed(db)
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{api.url}/dashboard")
    page.wait_for_selector("#connection-status[data-state='connected']", timeout=5000)
    assert page.locator("[data-testid=signal-row]").count() == 5

    long_signal = create_random_signal(db, symbol="BTC/USDT", direction="long")
    # pushed over the feed: the page is never reloaded (timeouts only bound a failure)
    page.wait_for_selector(f"tr[data-id='{long_signal['id']}']", timeout=15000)
    page.wait_for_selector("[data-testid=toast]", timeout=15000)
    toast = page.locator("[data-testid=toast]").first.inner_text()
    assert "LONG BTC/USDT" in toast
    chips = page.locator(f"tr[data-id='{long_signal['id']}'] [data-testid=mtf-chip]")
    assert chips.count() == 4
    assert chips.first.get_attribute("data-vote") == "long"

    short_signal = create_random_signal(db, symbol="ETH/USDT", direction="short")
    short_row = page.locator(f"tr[data-id='{short_signal['id']}']")
    short_row.wait_for(timeout=2000)
    long_row = page.locator(f"tr[data-id='{long_signal['id']}']")
    page.click("[data-testid=filter-long]")
    assert long_row.is_visible() and not short_row.is_visible()
    page.click("[data-testid=filter-short]")
    assert short_row.is_visible() and not long_row.is_visible()
    page.click("[data-testid=filter-all]")
    assert short_row.is_visible() and long_row.is_visible()

    page.wait_for_function("document.getElementById('stat-total').textContent !== '–'")
    page.wait_for_function("document.getElementById('candles').dataset.bars > 0", timeout=5000)
    page.wait_for_function("document.getElementById('perf-count').textContent === '5'")
    for canvas in ("candles", "equity", "winrate"):
        assert page.evaluate(_INKED_PIXELS, canvas) > 500, canvas
    page.screenshot(path=str(ARTIFACTS / "dashboard-1280.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(400)  # the resize redraw is debounced
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for canvas in ("candles", "equity", "winrate"):
        assert page.evaluate(_INKED_PIXELS, canvas) > 200, canvas
    page.screenshot(path=str(ARTIFACTS / "dashboard-390.png"), full_page=True)
    assert errors == []
    page.close()


def test_dashboard_uses_the_token_from_its_url(
    secured_api: ApiServer, browser: Any, db: Conn
) -> None:
    stored = create_random_signal(db)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{secured_api.url}/dashboard?token={API_TOKEN}")
    page.wait_for_selector("#connection-status[data-state='connected']", timeout=5000)
    page.wait_for_selector(f"tr[data-id='{stored['id']}']", timeout=2000)
    # the WebSocket authenticated with a subprotocol; the token left the address bar
    assert API_TOKEN not in page.url
    page.close()


def test_dashboard_shows_a_filter_that_silences_the_engine(
    api: ApiServer, browser: Any, db: Conn
) -> None:
    db.execute("DELETE FROM ai_filter_health")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{api.url}/dashboard")
        page.wait_for_selector("#health-banner[data-state='ok']", state="attached", timeout=5000)
        assert not page.locator("[data-testid=health-banner]").is_visible()
        db.execute(
            "INSERT INTO ai_filter_health (name, model_version, scored, passed, rejecting_all)"
            " VALUES ('live:binance:all', '4', 20, 0, true)"
        )
        page.reload()
        page.wait_for_selector("#health-banner[data-state='rejecting_all']", timeout=5000)
        text = page.locator("[data-testid=health-banner]").inner_text()
        assert "model v4 rejected all of the last 20 candidates" in text
    finally:
        page.close()
        db.execute("DELETE FROM ai_filter_health")


def test_dashboard_strategy_selector_shows_one_strategy(
    api: ApiServer, browser: Any, db: Conn
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    stored: dict[str, list[str]] = {"default": [], "donchian": []}
    for i, (name, outcome) in enumerate(
        [
            ("default", "tp_hit"),
            ("donchian", "sl_hit"),
            ("donchian", "tp_hit"),
            ("default", "sl_hit"),
        ]
        + [("donchian", "tp_hit")]
    ):
        signal = create_random_signal(db, ts=now - timedelta(hours=5 - i), strategy=name)
        create_random_performance(db, signal, outcome=outcome, strategy=name)
        stored[name].append(str(signal["id"]))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{api.url}/dashboard")
        page.wait_for_selector("#connection-status[data-state='connected']", timeout=5000)
        page.wait_for_function("document.getElementById('perf-count').textContent === '5'")
        options = page.locator("[data-testid=strategy-select] option")
        assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [
            "",
            "default",
            "donchian",
        ]
        page.select_option("[data-testid=strategy-select]", "donchian")
        page.wait_for_selector("#performance[data-strategy='donchian']", state="attached")
        assert page.locator("#perf-count").inner_text() == "3"
        assert page.locator("#perf-winrate").inner_text() == "66.7%"
        for sid in stored["donchian"]:
            assert page.locator(f"tr[data-id='{sid}']").is_visible()
        for sid in stored["default"]:
            assert not page.locator(f"tr[data-id='{sid}']").is_visible()
        # a live signal of the other strategy arrives hidden; one of the chosen one shows
        other = create_random_signal(db, strategy="default")
        chosen = create_random_signal(db, strategy="donchian")
        page.wait_for_selector(f"tr[data-id='{chosen['id']}']", timeout=2000)
        page.locator(f"tr[data-id='{other['id']}']").wait_for(state="attached", timeout=2000)
        assert not page.locator(f"tr[data-id='{other['id']}']").is_visible()
        page.select_option("[data-testid=strategy-select]", "")
        page.wait_for_selector("#performance[data-strategy='']", state="attached")
        assert page.locator(f"tr[data-id='{other['id']}']").is_visible()
        assert page.locator("#perf-count").inner_text() == "5"
        assert errors == []
    finally:
        page.close()
