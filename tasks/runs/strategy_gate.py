"""Strategy checks on stored klines, their verdicts per strategy_version, and the gate the live
stream passes: a strategy without a passing verdict for its exact code and parameters does
not run live unless the operator says so (SIGNALENGINE_ALLOW_UNCHECKED_STRATEGIES).

Built-in strategies (the `signalengine` package's own, e.g. `default`) are checked in CI
(tests/tasks/test_strategy_check.py runs `strategy check` on them) and pass the gate
without a stored verdict: a fresh demo database has no history to check them on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd
from psycopg.types.json import Jsonb

from signalengine.core.db import DbConn
from signalengine.core.errors import ConfigurationError
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import load_strategies
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.marketdata.ingest import stored_window
from signalengine.tasks.runs.history import load_history_columns
from signalengine.tasks.runs.strategy_check import run_checks
from signalengine.tasks.runs.strategy_subjects import strategy_subject

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHECK_DAYS",
    "DEFAULT_CHECK_SYMBOLS",
    "admit_strategies",
    "check_stored",
    "check_window",
    "engine_setup",
    "format_report",
    "is_builtin",
    "resolve_strategy",
    "stored_verdict",
]


def resolve_strategy(
    name: str, *, configured: str | None, config: EngineConfig, params: str | None = None
) -> Strategy:
    """The strategy `name` of SIGNALENGINE_STRATEGIES, else the class `name` names (a
    built-in, `package.module:Class` or an entry point) with `params` (JSON object)."""
    if params is None:
        for strategy in load_strategies(configured, config):
            if strategy.name == name:
                return strategy
    try:
        values = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"--params is not valid JSON: {e}") from e
    if not isinstance(values, dict):
        raise ConfigurationError("--params must be a JSON object")
    spec = {"name": _instance_name(name), "use": name, "params": values}
    return load_strategies([spec], config)[0]


def _instance_name(use: str) -> str:
    """A strategy name (lowercase, digits, _ and -) for a class path: NextBarPeek ->
    next_bar_peek."""
    tail = use.rpartition(":")[2] or use
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", tail).lower()
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", snake).strip("-_")
    return cleaned[:64] or "strategy"


def is_builtin(strategy: Strategy) -> bool:
    """A strategy shipped in the package (checked in CI, see module docstring)."""
    return type(strategy).__module__.startswith("signalengine.")


DEFAULT_CHECK_DAYS = 7.0
# Configured symbols `strategy check` takes when none are given (seconds each).
DEFAULT_CHECK_SYMBOLS = 3
# Symbols a stream start checks a never-checked strategy version on (seconds each).
GATE_CHECK_SYMBOLS = 2


def check_window(
    conn: DbConn,
    *,
    exchange: str,
    symbols: Sequence[str],
    start: str | None,
    end: str | None,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a check: given ISO times, else the DEFAULT_CHECK_DAYS up to the
    close of the newest stored 1m bar of the symbols (from their first bar if later)."""
    return stored_window(
        conn,
        exchange=exchange,
        symbols=symbols,
        start=start,
        end=end,
        default_days=DEFAULT_CHECK_DAYS,
    )


def check_stored(
    conn: DbConn,
    strategy: Strategy,
    *,
    exchange: str,
    symbols: Sequence[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    cuts: int,
) -> dict[str, Any]:
    """Run every check on the stored 1m bars of `symbols` in [start, end); store the verdict."""
    bars = load_history_columns(
        conn, exchange=exchange, symbols=list(symbols), start=start, end=end
    )
    empty = [s for s, frame in bars.items() if frame.empty]
    if empty:
        raise ConfigurationError(
            f"no stored 1m bars of {', '.join(empty)} on {exchange} in"
            f" [{start.isoformat()}, {end.isoformat()})"
        )

    def make() -> Any:
        return strategy_subject(
            type(strategy)(strategy.params, name=strategy.name, config=strategy.config),
            exchange=exchange,
        )

    verdict = run_checks(make, bars, cuts=cuts)
    verdict |= {"exchange": exchange, "start": start.isoformat(), "end": end.isoformat()}
    verdict["engine"] = engine_setup(strategy.config)
    store_verdict(conn, verdict)
    return verdict


def engine_setup(config: EngineConfig) -> dict[str, Any]:
    """The engine settings a verdict holds for beyond the strategy's own code and params
    (its version): a verdict of another setup does not admit the strategy."""
    return json.loads(json.dumps(dataclasses.asdict(config)))  # type: ignore[no-any-return]


def store_verdict(conn: DbConn, verdict: dict[str, Any]) -> None:
    """Keep the verdict of a strategy_version (the latest check of it wins)."""
    conn.execute(
        "INSERT INTO strategy_checks (strategy_version, strategy, passed, verdict)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (strategy_version) DO UPDATE SET"
        " strategy = EXCLUDED.strategy, passed = EXCLUDED.passed,"
        " verdict = EXCLUDED.verdict, checked_at = now()",
        (
            verdict["strategy_version"],
            verdict["strategy"],
            bool(verdict["passed"]),
            Jsonb(json.loads(json.dumps(verdict, default=str))),
        ),
    )


def stored_verdict(conn: DbConn, version: str) -> dict[str, Any] | None:
    """The stored verdict of a strategy_version, or None when it was never checked."""
    row = conn.execute(
        "SELECT verdict FROM strategy_checks WHERE strategy_version = %s", (version,)
    ).fetchone()
    if row is None:
        return None
    verdict = row["verdict"] if isinstance(row, dict) else row[0]
    return dict(verdict)


def _failed_checks(verdict: dict[str, Any]) -> str:
    parts = []
    for name, check in verdict.get("checks", {}).items():
        if not check.get("passed"):
            moved = (check.get("first") or {}).get("moved") or []
            detail = ", ".join(moved) or check.get("error")
            parts.append(f"{name} ({detail})" if detail else name)
    return ", ".join(parts) or "?"


def _check_now(
    conn: DbConn, strategy: Strategy, *, exchange: str, symbols: Sequence[str]
) -> tuple[dict[str, Any] | None, str]:
    """Check a never-checked version on the newest stored bars of a few of the stream's
    symbols (stored, so the next start reuses it); (None, why) when that is not possible."""
    chosen = list(symbols)[:GATE_CHECK_SYMBOLS]
    try:
        begin, end = check_window(conn, exchange=exchange, symbols=chosen, start=None, end=None)
        verdict = check_stored(
            conn, strategy, exchange=exchange, symbols=chosen, start=begin, end=end, cuts=5
        )
    except ConfigurationError as e:
        return None, str(e)
    logger.info("checked strategy %s (%s): %s", strategy.name, strategy.version, verdict["passed"])
    return verdict, ""


def admit_strategies(
    conn: DbConn,
    strategies: Sequence[Strategy],
    *,
    allow_unchecked: bool,
    run_id: str,
    exchange: str | None = None,
    symbols: Sequence[str] = (),
) -> list[str]:
    """Raise ConfigurationError for a strategy without a passing verdict of its version
    (built-ins excepted), unless `allow_unchecked`: then each is logged at WARNING and
    recorded in strategy_overrides (shown on /controls/strategies). A version never
    checked is checked here first when `exchange` and `symbols` are given (on the newest
    stored bars of up to GATE_CHECK_SYMBOLS of them; the verdict is stored, so later
    starts do not check it again). Returns the names admitted without a passing verdict."""
    overridden: list[str] = []
    for strategy in strategies:
        if is_builtin(strategy):
            continue
        verdict = stored_verdict(conn, strategy.version)
        if verdict is not None and verdict.get("engine") != engine_setup(strategy.config):
            verdict = None  # checked under other engine settings: check again
        why = "no stored bars to check it on"
        if verdict is None and exchange is not None and symbols:
            verdict, why = _check_now(conn, strategy, exchange=exchange, symbols=symbols)
        if verdict is not None and verdict.get("passed"):
            continue
        if verdict is None:
            reason = (
                f"strategy {strategy.name!r} (version {strategy.version}) was never checked"
                f" ({why}): run `signalengine strategy check {strategy.name}`"
            )
        else:
            reason = (
                f"strategy {strategy.name!r} (version {strategy.version}) failed"
                f" `signalengine strategy check`: {_failed_checks(verdict)}"
            )
        if not allow_unchecked:
            raise ConfigurationError(
                f"{reason}; the stream refuses it (override: --allow-unchecked or"
                " SIGNALENGINE_ALLOW_UNCHECKED_STRATEGIES=true)"
            )
        logger.warning("running an unchecked strategy on operator override: %s", reason)
        conn.execute(
            "INSERT INTO strategy_overrides (strategy, strategy_version, run_id, reason)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (strategy, strategy_version, run_id)"
            " DO UPDATE SET reason = EXCLUDED.reason, allowed_at = now()",
            (strategy.name, strategy.version, run_id, reason),
        )
        overridden.append(strategy.name)
    return overridden


def _line(name: str, check: dict[str, Any]) -> list[str]:
    mark = "PASS" if check.get("passed") else "FAIL"
    out = [f"  {name:<12} {mark}  ({check.get('seconds', 0):.1f} s)"]
    first = check.get("first")
    if name == "lookahead" and first:
        out.append(
            f"      {check.get('changed_signals')} signal(s) at or before {check['cut']}"
            f" changed when the bars after it were scrambled ({check['symbol']});"
            f" timeframe(s): {', '.join(check.get('timeframes', [])) or '?'}"
        )
    elif name == "lookahead":
        cuts = sum(len(v) for v in check.get("cuts", {}).values())
        out.append(
            f"      {cuts} cut points (over {len(check.get('cuts', {}))} symbols) x 2 scrambles:"
            f" no earlier signal moved in {check.get('runs')} backtests"
        )
    if name == "warmup":
        out.append(
            f"      declared lookback_bars {check.get('declared_lookback_bars')},"
            f" minimal warm-up that holds {check.get('minimal_warmup_bars')} bars"
            f" ({len(check.get('starts', []))} later starts)"
        )
        if check.get("error"):
            out.append(f"      {check['error']}")
    if name == "parity" and not first:
        out.append(f"      {check.get('closes')} closes, {check.get('signals')} signals equal")
    if name == "determinism" and not first and check.get("signals") is not None:
        out.append(f"      {check.get('signals')} signals equal in two runs")
    if first:
        out.append(
            f"      first offending signal: {first.get('direction')} {first.get('ts')}"
            f" ({first.get('kind')}); moved: {', '.join(first.get('moved') or []) or '?'}"
        )
        for feature in (first.get("features") or [])[:3]:
            out.append(f"        {feature['name']}: {feature['reference']} -> {feature['other']}")
    return out


def format_report(verdict: dict[str, Any]) -> str:
    """The readable report of a verdict (stderr of `strategy check`)."""
    lines = _report_lines(verdict)
    if verdict.get("error"):
        lines.append(f"  {verdict['error']}")
    return "\n".join(lines)


def _report_lines(verdict: dict[str, Any]) -> list[str]:
    head = (
        f"strategy {verdict['strategy']} (version {verdict.get('strategy_version')}):"
        f" {'PASSED' if verdict['passed'] else 'FAILED'}"
    )
    scope = (
        f"  {', '.join(verdict.get('symbols', []))} on {verdict.get('exchange')},"
        f" {verdict.get('start')} .. {verdict.get('end')}, {verdict.get('bars')} 1m bars"
    )
    lines = [head, scope]
    for name, check in verdict["checks"].items():
        lines += _line(name, check)
    return lines
