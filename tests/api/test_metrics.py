"""/metrics (Prometheus text) and /metrics/legacy (JSON)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.utils.signals import create_random_performance, create_random_signal

Conn = psycopg.Connection[Any]

FAMILIES = {
    "http_requests",
    "http_request_duration_seconds",
    "ws_connected_clients",
    "ws_messages_sent",
    "ws_clients_dropped",
    "signals_generated",
    "signal_score",
    "signal_outcomes",
    "signal_return_pct",
    "signal_duration_seconds",
    "signal_win_rate",
    "signal_avg_return_pct",
    "signal_sharpe",
    "feature_importance",
    "system_cpu_percent",
    "system_memory_bytes",
    "process_uptime_seconds",
}


def _samples(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
        found.setdefault(f"family:{family.name}", [])
    return found


def _value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


def test_every_family_is_exposed_with_database_figures(client: httpx.Client, db: Conn) -> None:
    for i, outcome in enumerate(["tp_hit", "tp_hit", "sl_hit", "expired"]):
        signal = create_random_signal(db, symbol="ETH/USDT")
        create_random_performance(db, signal, outcome=outcome, return_pct=[2.0, 1.0, -1.0, 0.25][i])
    db.execute(
        "INSERT INTO feature_importance (model_type, model_version, feature_name, importance)"
        " VALUES ('lightgbm', 'v1', 'rsi_14', 0.75), ('lightgbm', 'v1', 'macd', 0.25)"
    )
    deadline = time.monotonic() + 5
    while True:  # the four live signals reach this replica through LISTEN
        samples = _samples(client)
        if _value(samples, "signals_generated_total", symbol="ETH/USDT") >= 4:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert FAMILIES <= {
        name.removeprefix("family:") for name in samples if name.startswith("family:")
    }
    assert _value(samples, "signal_outcomes_total", outcome="tp_hit") == 2
    assert _value(samples, "signal_outcomes_total", outcome="sl_hit") == 1
    assert _value(samples, "signal_win_rate", symbol="ETH/USDT") == pytest.approx(0.5)
    assert _value(samples, "signal_avg_return_pct", symbol="ETH/USDT") == pytest.approx(0.5625)
    # Negative buckets: Prometheus text omits _sum/_count; +Inf holds the count.
    assert _value(samples, "signal_return_pct_bucket", le="+Inf") == 4
    assert _value(samples, "signal_duration_seconds_count") == 4
    assert _value(samples, "signal_return_pct_bucket", le="0.0") == 1
    assert (
        _value(samples, "feature_importance", feature_name="rsi_14", model_type="lightgbm") == 0.75
    )
    assert _value(samples, "signal_score_count") >= 4
    assert _value(samples, "process_uptime_seconds") > 0


def test_http_requests_are_labelled_by_route_template(client: httpx.Client) -> None:
    client.get("/signals/00000000-0000-0000-0000-000000000001")
    client.get("/no/such/route")
    samples = _samples(client)
    assert _value(samples, "http_requests_total", route="/signals/{signal_id}", status="404") >= 1
    assert _value(samples, "http_requests_total", route="unmatched", status="404") >= 1
    assert _value(samples, "http_request_duration_seconds_count", route="/signals/{signal_id}") >= 1


def test_legacy_json_has_the_key_figures(client: httpx.Client, db: Conn) -> None:
    signal = create_random_signal(db, symbol="BTC/USDT")
    create_random_performance(db, signal, outcome="tp_hit", return_pct=1.5)
    body = client.get("/metrics/legacy").json()
    assert body["total_signals"] == 1 and body["settled_signals"] == 1
    assert body["outcomes"] == {"tp_hit": 1, "sl_hit": 0, "expired": 0}
    assert body["win_rate"] == 1.0 and body["avg_return_pct"] == 1.5
    assert body["by_symbol"]["BTC/USDT"]["win_rate"] == 1.0
    assert body["memory_bytes"] > 0 and body["uptime_seconds"] > 0
    assert body["http_requests_total"] >= 1
