"""The live stream's strategy gate, through the real flow: a strategy whose version failed
`strategy check` is refused at start, before any bar is read (the override path, logged
and recorded, is tested on `admit_strategies` in tests/tasks/test_strategy_check.py)."""

from __future__ import annotations

import pytest

from signalengine.core.config import get_settings
from signalengine.core.errors import ConfigurationError
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.runs.strategy_gate import engine_setup, resolve_strategy, store_verdict
from tests.utils.net import free_port

SPEC = '[{"name": "peek", "use": "examples.strategies.biased:NextBarPeek"}]'


async def test_live_stream_refuses_a_failed_strategy(db, prefect_harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.stream import stream

    monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SIGNALENGINE_SYMBOLS", '["BTC/USDT"]')
    monkeypatch.setenv("SIGNALENGINE_STREAM_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("SIGNALENGINE_STRATEGIES", SPEC)
    config = EngineConfig.from_settings(get_settings())
    peek = resolve_strategy("peek", configured=SPEC, config=config)
    checks = {"lookahead": {"passed": False, "first": {"moved": ["next_close"]}}}
    verdict = {"strategy": "peek", "strategy_version": peek.version, "passed": False}
    store_verdict(db, verdict | {"checks": checks, "engine": engine_setup(config)})
    with pytest.raises(ConfigurationError, match=r"peek.*failed .*lookahead \(next_close\)"):
        await stream(max_minutes=1)
    assert db.execute("SELECT count(*) AS n FROM klines").fetchone()["n"] == 0
    assert db.execute("SELECT count(*) AS n FROM strategy_overrides").fetchone()["n"] == 0
