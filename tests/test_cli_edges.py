"""The CLI's bad-input edges: one line on stderr, exit 2, no traceback, nothing written.

The real `python -m signalengine` runs against the test database and the simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from signalengine.simulator import running_simulator
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from tests.utils.klines import random_klines

SYMBOL = "CLIX/USDT"


def _cli(args: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signalengine", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALENGINE_")}
    values.update(
        SIGNALENGINE_DATABASE_URL=database_url,
        SIGNALENGINE_STATE_DIR=str(tmp_path / "state"),
    )
    return values


@pytest.fixture
def stored(db: psycopg.Connection) -> pd.DataFrame:
    frame = random_klines(symbol=SYMBOL, start="2025-03-01", minutes=180, seed=4)
    store_klines(db, validate_klines(frame), timeframes=["1m", "5m", "15m", "1h"])
    return frame


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_export_refuses_unknown_timeframes_and_symbols_and_writes_bars(
    env: dict[str, str], stored: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    base = ["export", str(out), "--symbol", SYMBOL]
    _one_line_error(_cli([*base, "--timeframe", "4h"], env=env), "unknown timeframe '4h'")
    _one_line_error(
        _cli(["export", str(out), "--symbol", "NOPE/USDT"], env=env), "no stored 1m bars"
    )
    _one_line_error(_cli(["export", str(out), "--symbol", "??"], env=env), "not a trading pair")
    assert not out.exists()  # nothing half-written

    done = _cli([*base, "--timeframe", "1h"], env=env)
    assert done.returncode == 0, done.stderr
    exported = pd.read_csv(out)
    assert list(exported.columns) == ["ts", "open", "high", "low", "close", "volume", "bars"]
    assert exported["bars"].tolist() == [60, 60, 60]


def test_import_refuses_a_file_that_is_not_1m_bars(
    env: dict[str, str], tmp_path: Path, db: psycopg.Connection
) -> None:
    hourly = random_klines(symbol=SYMBOL, start="2025-05-01", minutes=48 * 60, seed=5)
    hourly = hourly.iloc[::60][["ts", "open", "high", "low", "close", "volume"]]
    path = tmp_path / "hourly.csv"
    hourly.to_csv(path, index=False)
    _one_line_error(
        _cli(["import", str(path), "--symbol", "IMPX/USDT"], env=env),
        "usually 0 days 01:00:00 apart, not 1 minute",
    )
    # 1m bars with a gap are still 1m bars
    minutes = random_klines(symbol=SYMBOL, start="2025-05-01", minutes=120, seed=5)
    minutes = minutes.drop(index=range(30, 40))[["ts", "open", "high", "low", "close", "volume"]]
    path = tmp_path / "minutes.csv"
    minutes.to_csv(path, index=False)
    done = _cli(["import", str(path), "--symbol", "IMPX/USDT"], env=env)
    assert done.returncode == 0, done.stderr
    assert '"inserted": 110' in done.stdout.strip().splitlines()[-1]


def test_backfill_of_an_unlisted_symbol_is_one_line(env: dict[str, str]) -> None:
    with running_simulator(symbols=["BTC/USDT"], speed=1) as url:
        env["SIGNALENGINE_EXCHANGE_URL"] = url
        result = _cli(
            ["backfill", "--symbols", "BTC/USDT,NOPE/USDT", "--since", "2025-01-01"], env=env
        )
        _one_line_error(result, "lists no market NOPE/USDT")
        backwards = _cli(
            ["backfill", "--symbols", "BTC/USDT", "--since", "2025-02-01", "--until", "2025-01-01"],
            env=env,
        )
        _one_line_error(backwards, "must be before --until")


def test_retrain_of_a_strategy_that_is_not_configured(env: dict[str, str]) -> None:
    result = _cli(["retrain", "--strategies", "default,nope"], env=env)
    _one_line_error(result, "['nope'] are not configured", "['default']")
