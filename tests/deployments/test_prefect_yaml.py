"""prefect.yaml: every deployment points at a real Prefect flow, with the agreed schedules."""

from __future__ import annotations

import inspect
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.templating import apply_values

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"
WORK_POOL_JSON = ROOT / "deployments" / "work-pool.json"
POOL = "signalengine-process"
FLOWS = ("stream", "settle", "rollups", "retrain", "backfill", "backtest")


def _config() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _config()["deployments"]}


def test_one_deployment_per_flow() -> None:
    names = [d["name"] for d in _config()["deployments"]]
    assert sorted(names) == sorted(FLOWS)
    assert len(names) == len(set(names))


def test_shared_settings_come_from_definitions_anchors() -> None:
    text = PREFECT_YAML.read_text()
    config = _config()
    assert "definitions" in config
    assert re.search(r"&process_pool\b", text)
    assert len(re.findall(r"\*process_pool\b", text)) == len(FLOWS)
    pool = config["definitions"]["work_pools"]["process"]
    assert pool["name"] == POOL
    for deployment in config["deployments"]:
        assert deployment["work_pool"] == pool, deployment["name"]


@pytest.mark.parametrize("name", FLOWS)
def test_entrypoint_is_a_prefect_flow(name: str) -> None:
    deployment = _deployments()[name]
    entrypoint = deployment["entrypoint"]
    assert entrypoint == f"flows/{name}.py:{name}"
    path = ROOT / entrypoint.split(":")[0]
    assert path.is_file(), f"{entrypoint}: flow file missing"
    flow = load_flow_from_entrypoint(str(path) + ":" + name)
    assert isinstance(flow, Flow), f"{entrypoint} is not decorated with @flow"
    accepted = inspect.signature(flow.fn).parameters
    unknown = set(deployment.get("parameters", {})) - set(accepted)
    assert not unknown, f"{entrypoint} takes no parameter(s) {sorted(unknown)}"


def _schedules(name: str) -> list[dict[str, Any]]:
    return _deployments()[name].get("schedules") or []


def test_settle_runs_every_minute() -> None:
    (schedule,) = _schedules("settle")
    built = IntervalSchedule(interval=timedelta(seconds=schedule["interval"]))
    assert built.interval == timedelta(seconds=60)


def test_rollups_run_every_five_minutes() -> None:
    (schedule,) = _schedules("rollups")
    built = IntervalSchedule(interval=timedelta(seconds=schedule["interval"]))
    assert built.interval == timedelta(minutes=5)


def test_retrain_runs_daily_at_03_17_utc() -> None:
    (schedule,) = _schedules("retrain")
    built = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert built.cron == "17 3 * * *"
    assert built.timezone == "UTC"


@pytest.mark.parametrize("name", ["stream", "backfill", "backtest"])
def test_long_running_and_ad_hoc_flows_have_no_schedule(name: str) -> None:
    assert _schedules(name) == []


def test_scheduled_flows_never_overlap_themselves() -> None:
    for name in ("settle", "rollups", "retrain"):
        limit = _deployments()[name]["concurrency_limit"]
        assert limit == {"limit": 1, "collision_strategy": "CANCEL_NEW"}, name


def test_stream_takes_symbols_and_a_shard() -> None:
    parameters = _deployments()["stream"]["parameters"]
    assert parameters["symbols"] and all("/" in s for s in parameters["symbols"])
    assert re.fullmatch(r"\d+/\d+", parameters["shard"])


def test_pull_step_moves_into_the_image_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    (step,) = _config()["pull"]
    # Unset where `prefect deploy` runs: kept as a placeholder for the worker to resolve.
    monkeypatch.delenv("SIGNALENGINE_HOME", raising=False)
    assert apply_values(step, {}, remove_notset=False) == step
    monkeypatch.setenv("SIGNALENGINE_HOME", "/opt/signalengine")
    assert apply_values(step, {}) == {
        "prefect.deployments.steps.set_working_directory": {"directory": "/opt/signalengine"}
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"SIGNALENGINE_HOME=/opt/signalengine\b", dockerfile)
    assert re.search(r"^WORKDIR /opt/signalengine$", dockerfile, re.MULTILINE)


def test_work_pool_template_fits_the_process_worker() -> None:
    from prefect.workers.process import ProcessWorker

    ours = json.loads(WORK_POOL_JSON.read_text())
    default = ProcessWorker.get_default_base_job_template()
    assert ours["job_configuration"] == default["job_configuration"]
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    env = ours["variables"]["properties"]["env"]["default"]
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_served_schedules_equal_the_prefect_yaml_ones() -> None:
    """`up` serves settle/rollups/retrain itself (signalengine.schedules); workers take
    prefect.yaml. Both must give the same timing."""
    from signalengine import schedules

    (settle,) = _schedules("settle")
    (rollups,) = _schedules("rollups")
    (retrain,) = _schedules("retrain")
    assert settle["interval"] == schedules.SETTLE_EVERY_SECONDS
    assert rollups["interval"] == schedules.ROLLUPS_EVERY_SECONDS
    assert retrain["cron"] == schedules.RETRAIN_CRON
    assert {settle["timezone"], rollups["timezone"], retrain["timezone"]} == {"UTC"}
