"""SIGNALENGINE_EXCHANGES: several exchanges with their URLs and symbols, checked by
pydantic; the CLI reports a bad value in one line (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from signalengine.core.config import Settings

TWO = [
    {"id": "binance", "url": "http://127.0.0.1:8900", "symbols": ["BTC/USDT"]},
    {"id": "bybit", "url": "http://127.0.0.1:8901/", "symbols": ["btcusdt", "ETH-USDT"]},
]


def _settings(monkeypatch: pytest.MonkeyPatch, value: object) -> Settings:
    monkeypatch.setenv("SIGNALENGINE_EXCHANGES", json.dumps(value))
    return Settings()


def test_several_exchanges_each_with_url_and_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, TWO)
    venues = settings.venues()
    assert [v.id for v in venues] == ["binance", "bybit"]
    assert venues[1].url == "http://127.0.0.1:8901" and venues[1].symbols == [
        "BTC/USDT",
        "ETH/USDT",
    ]
    bybit = settings.for_exchange("bybit")
    assert (bybit.exchange, bybit.exchange_url, bybit.symbols) == (
        "bybit",
        "http://127.0.0.1:8901",
        ["BTC/USDT", "ETH/USDT"],
    )
    assert settings.for_exchange().exchange == "binance"  # the first
    assert bybit.primary_timeframe == settings.primary_timeframe  # the rest is shared
    with pytest.raises(ValueError, match="not configured"):
        settings.for_exchange("kraken")


def test_unset_means_the_single_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNALENGINE_EXCHANGES", raising=False)
    monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("SIGNALENGINE_SYMBOLS", '["SOL/USDT"]')
    settings = Settings()
    [venue] = settings.venues()
    assert (venue.id, venue.url, venue.symbols) == (
        "binance",
        "http://127.0.0.1:9999",
        ["SOL/USDT"],
    )
    assert settings.for_exchange("binance").exchange_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"id": "okx", "symbols": ["BTC/USDT"]}], "unknown exchange id 'okx'"),
        ([{"id": "bybit", "symbols": []}], "at least 1 item"),
        ([{"id": "bybit"}], "Field required"),
        ([{"id": "bybit", "url": "ftp://h", "symbols": ["BTC/USDT"]}], "not an http(s) URL"),
        ([{"id": "bybit", "url": "http://h:99999", "symbols": ["BTC/USDT"]}], "bad port"),
        ([{"id": "bybit", "url": "http://h/v5", "symbols": ["BTC/USDT"]}], "base URL"),
        ([{"id": "bybit", "symbols": ["NOT A PAIR"]}], "NOT A PAIR"),
        ([{"id": "bybit", "symbols": ["BTCUSDT", "BTC/USDT"]}], "twice"),
        ([{"id": "bybit", "symbols": ["BTC/USDT"], "key": "x"}], "Extra inputs"),
        (TWO + [TWO[0]], "an exchange twice"),
        ([], "empty"),
        ({"id": "bybit"}, "valid list"),
    ],
)
def test_bad_values_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _settings(monkeypatch, value)


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALENGINE_")}
    values.update(SIGNALENGINE_STATE_DIR=str(tmp_path / "state"), **env)
    return subprocess.run(
        [sys.executable, "-m", "signalengine", *args],
        env=values,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_bad_inputs_are_one_line_exit_2(tmp_path: Path) -> None:
    bad = json.dumps([{"id": "bybit", "url": "ftp://x", "symbols": ["BTC/USDT"]}])
    cases = [
        (["stream"], {"SIGNALENGINE_EXCHANGES": bad}, "SIGNALENGINE_EXCHANGES[0].url"),
        (
            ["stream", "--symbols", "BTC/USDT"],
            {"SIGNALENGINE_EXCHANGES": json.dumps(TWO)},
            "--exchange",
        ),
        (["stream", "--exchange", "kraken"], {"SIGNALENGINE_EXCHANGES": json.dumps(TWO)}, "kraken"),
        (["sim", "--exchange", "okx"], {}, "unknown dialect 'okx'"),
    ]
    for args, env, fragment in cases:
        done = _cli(args, tmp_path, **env)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
        assert fragment in lines[0] and "Traceback" not in done.stderr
