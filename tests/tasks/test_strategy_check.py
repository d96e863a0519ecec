"""`signalengine strategy check` through the real CLI on klines stored in the test database:
the default strategy and the plain Donchian example pass; each deliberately biased example
fails, naming what it peeks at. Plus the stream's gate on stored verdicts, and the
harness's own drivers against the engine's."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row

from signalengine.core.errors import ConfigurationError
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.strategies import DefaultStrategy
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from signalengine.tasks.runs.strategy_check import run_checks
from signalengine.tasks.runs.strategy_gate import (
    admit_strategies,
    check_stored,
    check_window,
    resolve_strategy,
    stored_verdict,
)
from signalengine.tasks.runs.strategy_subjects import strategy_subject
from tests.utils.klines import random_klines
from tests.utils.tables import empty_database

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("SCA/USDT", "SCB/USDT")
# 4.5 days of 1m bars: the default strategy declares a warm-up of 1000 5m bars (3.5 days),
# and the warm-up check compares at least 200 bars after it.
MINUTES = int(4.5 * 1440)
START = "2025-02-01"
BIASED = ("NextBarPeek", "CentredMean", "UnclosedHigherTimeframe")


def _frame(symbol: str, seed: int) -> pd.DataFrame:
    return random_klines(symbol=symbol, start=START, minutes=MINUTES, seed=seed)


@pytest.fixture(scope="module")
def stored(database_url: str) -> Iterator[str]:
    """The symbols' 1m bars (and their 5m/15m/1h buckets) in the test database."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        for k, symbol in enumerate(SYMBOLS):
            store_klines(
                conn, validate_klines(_frame(symbol, 30 + k)), timeframes=["1m", "5m", "15m", "1h"]
            )
        yield database_url
        empty_database(conn)


def _command(url: str, name: str, *extra: str, symbols: tuple[str, ...]) -> dict[str, Any]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALENGINE_")}
    values.update(SIGNALENGINE_DATABASE_URL=url)
    args = ["strategy", "check", name, "--symbols", ",".join(symbols), *extra]
    return {
        "args": [sys.executable, "-m", "signalengine", *args],
        "cwd": ROOT,  # `python -m` puts the checkout on sys.path: examples.strategies imports
        "env": values,
        "text": True,
    }


def _check(
    url: str, name: str, *extra: str, symbols: tuple[str, ...] = SYMBOLS
) -> subprocess.CompletedProcess[str]:
    command = _command(url, name, *extra, symbols=symbols)
    return subprocess.run(**command, capture_output=True, timeout=240, check=False)


# The examples' CLI runs, started together (they are independent: minutes of CPU in all,
# mostly interpreter start-up and numpy, so two cores halve the wall time).
CLI_RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("default", SYMBOLS),
    "Donchian": ("examples.strategies.donchian:Donchian", SYMBOLS),
    **{c: (f"examples.strategies.biased:{c}", SYMBOLS[:1]) for c in BIASED},
}


@pytest.fixture(scope="module")
def cli_runs(stored: str) -> dict[str, subprocess.CompletedProcess[str]]:
    started = {
        key: subprocess.Popen(  # noqa: S603
            **_command(stored, name, symbols=symbols),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for key, (name, symbols) in CLI_RUNS.items()
    }
    done = {}
    for key, proc in started.items():
        out, err = proc.communicate(timeout=300)
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def _verdict(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in result.stderr, result.stderr
    verdict: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return verdict


@pytest.mark.parametrize("name", ["default", "Donchian"])
def test_unbiased_strategies_pass(
    cli_runs: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = cli_runs[name]
    verdict = _verdict(result)
    assert result.returncode == 0, result.stderr
    assert verdict["passed"] is True
    checks = verdict["checks"]
    assert set(checks) == {"lookahead", "warmup", "parity", "determinism"}
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["parity"]["closes"] > 0 and checks["parity"]["signals"] > 0
    assert checks["determinism"]["signals"] > 0
    assert sum(len(c) for c in checks["lookahead"]["cuts"].values()) >= 2 * 5
    warmup = checks["warmup"]
    assert warmup["starts"] and warmup["minimal_warmup_bars"] <= warmup["declared_lookback_bars"]
    assert "PASSED" in result.stderr.splitlines()[0]


@pytest.mark.parametrize(
    ("cls", "moved", "timeframe"),
    [
        ("NextBarPeek", "next_close", "5m"),
        ("CentredMean", "centred_mean", "5m"),
        ("UnclosedHigherTimeframe", "hour_close", "5m"),
    ],
)
def test_biased_strategies_fail_naming_the_feature(
    cli_runs: dict[str, subprocess.CompletedProcess[str]], cls: str, moved: str, timeframe: str
) -> None:
    result = cli_runs[cls]
    verdict = _verdict(result)
    assert result.returncode == 1, result.stderr
    assert verdict["passed"] is False
    lookahead = verdict["checks"]["lookahead"]
    assert lookahead["passed"] is False
    assert moved in lookahead["first"]["moved"], lookahead["first"]
    assert lookahead["timeframes"] == [timeframe]
    # a peek at the future also makes the live driver disagree with the backtest
    assert verdict["checks"]["parity"]["passed"] is False
    assert "FAILED" in result.stderr and moved in result.stderr


def test_a_recursive_feature_fails_the_warm_up_check(stored: str) -> None:
    """Donchian recording ATR (recursive: Wilder smoothing) while declaring 21 bars."""
    strategy = resolve_strategy(
        "tests.tasks.strategy_examples:DonchianWithAtr", configured=None, config=EngineConfig()
    )
    with psycopg.connect(stored, row_factory=dict_row, autocommit=True) as conn:
        begin, end = check_window(
            conn, exchange="binance", symbols=SYMBOLS[:1], start=None, end=None
        )
        verdict = check_stored(
            conn, strategy, exchange="binance", symbols=SYMBOLS[:1], start=begin, end=end, cuts=3
        )
    warmup = verdict["checks"]["warmup"]
    assert warmup["passed"] is False and "atr_14" in warmup["first"]["moved"]
    assert warmup["minimal_warmup_bars"] > warmup["declared_lookback_bars"] == 21
    assert verdict["checks"]["lookahead"]["passed"] is True
    assert verdict["passed"] is False


def test_a_strategy_without_signals_does_not_pass() -> None:
    strategy = resolve_strategy(
        "tests.tasks.strategy_examples:Silent", configured=None, config=EngineConfig()
    )
    frame = _frame("SCA/USDT", 30).set_index("ts")[["open", "high", "low", "close", "volume"]]
    frame.index = pd.DatetimeIndex(frame.index).as_unit("ns")
    verdict = run_checks(
        lambda: strategy_subject(strategy, exchange="binance"), {"SCA/USDT": frame}
    )
    assert verdict["signals"] == 0 and verdict["passed"] is False
    assert "no signal" in verdict["error"]


def test_bad_input_is_one_line_and_exit_2(stored: str) -> None:
    with psycopg.connect(stored, row_factory=dict_row, autocommit=True) as conn:
        with pytest.raises(ConfigurationError, match="no stored 1m bars"):
            check_window(conn, exchange="binance", symbols=["NONE/USDT"], start=None, end=None)
        with pytest.raises(ConfigurationError, match="no stored 1m bars of SCA/USDT"):
            strategy = resolve_strategy("default", configured=None, config=EngineConfig())
            early = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC"))
            check_stored(
                conn,
                strategy,
                exchange="binance",
                symbols=SYMBOLS[:1],
                start=early[0],
                end=early[1],
                cuts=1,
            )
    for result, fragment in [
        (_check(stored, "no.such.module:Nope"), "cannot import strategy module"),
        (
            _check(stored, "examples.strategies.donchian:Donchian", "--params", '{"period": 1}'),
            "period",
        ),
    ]:
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_the_stream_gate_refuses_unchecked_and_failing_strategies(stored: str) -> None:
    config = EngineConfig()
    donchian = resolve_strategy(
        "examples.strategies.donchian:Donchian", configured=None, config=config, params="{}"
    )
    peek = resolve_strategy(
        "examples.strategies.biased:NextBarPeek", configured=None, config=config, params="{}"
    )
    builtin = DefaultStrategy(name="default", config=config)
    sibling = resolve_strategy(  # same module and params as NextBarPeek: its own version
        "examples.strategies.biased:UnclosedHigherTimeframe", configured=None, config=config
    )
    assert sibling.version != peek.version
    with psycopg.connect(stored, row_factory=dict_row, autocommit=True) as conn:
        conn.execute("TRUNCATE strategy_checks, strategy_overrides")
        with pytest.raises(ConfigurationError, match="never checked"):
            admit_strategies(conn, [builtin, donchian], allow_unchecked=False, run_id="live")
        with pytest.raises(ConfigurationError, match="never checked .no stored 1m bars"):
            admit_strategies(
                conn,
                [donchian],
                allow_unchecked=False,
                run_id="live",
                exchange="binance",
                symbols=["NONE/USDT"],
            )
        window = (
            pd.Timestamp(START, tz="UTC"),
            pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=5),
        )
        for strategy in (donchian, peek):
            check_stored(
                conn,
                strategy,
                exchange="binance",
                symbols=SYMBOLS[:1],
                start=window[0],
                end=window[1],
                cuts=5,
            )
        assert (
            admit_strategies(conn, [builtin, donchian], allow_unchecked=False, run_id="live") == []
        )
        with pytest.raises(ConfigurationError, match=r"failed .*lookahead \(next_close"):
            admit_strategies(conn, [peek], allow_unchecked=False, run_id="live")
        assert admit_strategies(conn, [peek], allow_unchecked=True, run_id="live") == [
            "next_bar_peek"
        ]
        # a verdict holds for the engine settings it was made under only
        other = dataclasses.replace(config, live_window_bars=500)
        with pytest.raises(ConfigurationError, match="never checked"):
            admit_strategies(
                conn, [donchian.with_config(other)], allow_unchecked=False, run_id="live"
            )
        # a version never checked is checked at start on stored bars, and kept
        wider = resolve_strategy(
            "examples.strategies.donchian:Donchian",
            configured=None,
            config=config,
            params='{"period": 30}',
        )
        assert stored_verdict(conn, wider.version) is None
        assert (
            admit_strategies(
                conn,
                [wider],
                allow_unchecked=False,
                run_id="live",
                exchange="binance",
                symbols=SYMBOLS,
            )
            == []
        )
        kept = stored_verdict(conn, wider.version)
        assert kept is not None and kept["passed"] is True and kept["symbols"] == list(SYMBOLS)
        rows = conn.execute(
            "SELECT strategy, strategy_version, reason FROM strategy_overrides"
        ).fetchall()
        assert [(r["strategy"], r["strategy_version"]) for r in rows] == [
            ("next_bar_peek", peek.version)
        ]
        assert "lookahead" in rows[0]["reason"]
