"""/health and /performance/model read what the stream and the retrain wrote (sql/009)."""

from __future__ import annotations

import httpx
import psycopg


def _report(db: psycopg.Connection, name: str, *, version: str | None, passed: int, age_s: int):
    db.execute(
        "INSERT INTO ai_filter_health (name, model_version, scored, passed, rejecting_all,"
        " updated_at) VALUES (%s, %s, 20, %s, %s, now() - make_interval(secs => %s))",
        (name, version, passed, version is not None and passed == 0, age_s),
    )


def test_health_turns_degraded_while_the_filter_rejects_every_candidate(
    client: httpx.Client, db: psycopg.Connection
) -> None:
    db.execute("DELETE FROM ai_filter_health")
    try:
        body = client.get("/health").json()
        assert body["ai_filter"]["status"] == "unknown"  # no stream reported
        _report(db, "live:binance:0/2", version=None, passed=0, age_s=0)
        body = client.get("/health").json()
        assert body["ai_filter"]["status"] == "unfiltered" and body["status"] == "ok"
        # a stale report (stream stopped an hour ago) does not count
        _report(db, "live:binance:old", version="1", passed=0, age_s=3600)
        assert client.get("/health").json()["status"] == "ok"
        _report(db, "live:binance:1/2", version="3", passed=0, age_s=0)
        answer = client.get("/health")
        body = answer.json()
        assert answer.status_code == 200  # the API itself works
        assert body["status"] == "degraded"
        assert body["ai_filter"] == {
            "status": "rejecting_all",
            "model_version": "3",
            "scored": 40,
            "passed": 0,
        }
    finally:
        db.execute("DELETE FROM ai_filter_health")


def test_performance_model_says_why_no_model_was_promoted(
    client: httpx.Client, db: psycopg.Connection
) -> None:
    db.execute("DELETE FROM model_decisions")
    try:
        missing = client.get("/performance/model")
        assert missing.status_code == 404 and "signalengine retrain" in missing.json()["detail"]
        db.execute(
            "INSERT INTO model_decisions (model_type, model_version, run_id, promoted, reason,"
            " has_importance, decided_at) VALUES"
            " ('lightgbm', '1', 'r1', true, null, true, now() - interval '1 day'),"
            " ('lightgbm', '2', 'r2', false, 'holdout AUC 0.5000 not above chance', false,"
            " now())"
        )
        body = client.get("/performance/model").json()
        assert body["model_version"] == "2" and body["promoted"] is False
        assert body["reason"] == "holdout AUC 0.5000 not above chance"
        assert body["has_importance"] is False and body["champion_version"] == "1"
        assert client.get("/performance/model", params={"model_type": "x" * 101}).status_code == 422
    finally:
        db.execute("DELETE FROM model_decisions")


def test_health_turns_degraded_while_ingest_is_stale_or_the_clock_is_behind(
    client: httpx.Client, db: psycopg.Connection
) -> None:
    def report(name: str, lag: float) -> None:
        db.execute(
            "INSERT INTO stream_health (name, exchange_time, newest_close, lag_seconds)"
            " VALUES (%s, '2025-06-01 12:30+00', '2025-06-01 12:00+00', %s)"
            " ON CONFLICT (name) DO UPDATE SET lag_seconds = EXCLUDED.lag_seconds",
            (name, lag),
        )

    db.execute("DELETE FROM stream_health")
    try:
        report("live:binance:0/2", 20.0)
        body = client.get("/health").json()
        assert body["status"] == "ok" and body["ingest"]["status"] == "ok"
        report("live:binance:1/2", 1800.0)  # one shard stalled for 30 minutes
        body = client.get("/health").json()
        assert body["status"] == "degraded"
        assert body["ingest"]["status"] == "lagging" and body["ingest"]["lag_seconds"] == 1800
        report("live:binance:1/2", -3600.0)  # its exchange clock is an hour behind
        body = client.get("/health").json()
        assert body["status"] == "degraded" and body["ingest"]["status"] == "clock_behind"
    finally:
        db.execute("DELETE FROM stream_health")
