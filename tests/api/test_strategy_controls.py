"""GET /controls/strategies over real HTTP: stored `strategy check` verdicts and overrides."""

from __future__ import annotations

import httpx
import psycopg

from signalengine.tasks.runs.strategy_gate import store_verdict


def _verdict(strategy: str, version: str, *, lookahead: bool) -> dict[str, object]:
    checks = {
        "lookahead": {"passed": lookahead},
        "warmup": {"passed": True},
        "parity": {"passed": lookahead},
        "determinism": {"passed": True},
    }
    return {
        "strategy": strategy,
        "strategy_version": version,
        "passed": lookahead,
        "checks": checks,
    }


def test_verdicts_and_overrides_are_listed(client: httpx.Client, db: psycopg.Connection) -> None:
    store_verdict(db, _verdict("donchian", "aaaa", lookahead=True))
    store_verdict(db, _verdict("peek", "bbbb", lookahead=False))
    db.execute(
        "INSERT INTO strategy_overrides (strategy, strategy_version, run_id, reason)"
        " VALUES ('peek', 'bbbb', 'live', 'failed: lookahead (next_close)')"
    )
    response = client.get("/controls/strategies")
    assert response.status_code == 200
    body = response.json()
    assert body["allow_unchecked"] is False
    by_name = {c["strategy"]: c for c in body["checks"]}
    assert by_name["donchian"]["passed"] is True and by_name["donchian"]["failed"] == []
    assert by_name["peek"]["passed"] is False
    assert by_name["peek"]["failed"] == ["lookahead", "parity"]
    assert [(o["strategy"], o["run_id"]) for o in body["overrides"]] == [("peek", "live")]
    assert "next_close" in body["overrides"][0]["reason"]
    assert client.get("/controls").status_code == 200  # the per-symbol list is unchanged
