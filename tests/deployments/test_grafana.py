"""The Grafana dashboard only graphs metric families the code really exposes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployments._promql import known_names, metric_names, names_by_job, selectors_by_job

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deployments" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "signalengine.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (le) (rate(a_bucket{job="api", le="0.5"}[$__rate_interval]))', {"a_bucket"}),
        (
            "topk(10, max by (feature_name, model_type) (feature_importance))",
            {"feature_importance"},
        ),
        ("sum(rate(x_sum[30m])) / sum(rate(x_count[30m])) * 60", {"x_sum", "x_count"}),
        (
            "(sum(increase(c_total[1h])) or on() vector(0)) == 0 and on() up > 1e3",
            {"c_total", "up"},
        ),
        (
            "histogram_quantile(0.95, sum without (instance) (rate(h_bucket[5m] offset 1h)))",
            {"h_bucket"},
        ),
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_dashboard_is_provisioned_against_the_prometheus_datasource() -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = _dashboard()
    assert dashboard["uid"] == "signalengine"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_every_panel_expr_uses_existing_metrics() -> None:
    known = known_names()
    by_job = names_by_job()
    for title, expr in _exprs():
        used = metric_names(expr)
        assert used, f"{title}: no metric found in {expr!r}"
        assert used <= known, f"{title}: unknown metric(s) {sorted(used - known)}"
        for metric, job in selectors_by_job(expr):
            if metric != "up":
                assert metric in by_job[job], f"{title}: job {job!r} does not serve {metric}"


def test_dashboard_covers_the_agreed_panels() -> None:
    exprs = [expr for _, expr in _exprs()]

    def has(*fragments: str) -> bool:
        return any(all(f in expr for f in fragments) for expr in exprs)

    assert has("signal_win_rate")
    assert has("rate(signal_score_sum", "rate(signal_score_count")
    assert has("signals_generated_total", 'mtf_aligned="true"')
    assert has("histogram_quantile(0.95", "feature_computation_duration_seconds_bucket")
    assert has("topk(", "feature_importance")
    assert has("stream_ingest_lag_seconds")
    assert has("signals_emitted_total", "* 60")
    assert has("ws_connected_clients")
    assert has("histogram_quantile(0.99", "http_request_duration_seconds_bucket")


def test_panel_exprs_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (CI installs Debian's prometheus package)")
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, (_, expr) in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
