"""`signalengine optimize`: two real processes on one PostgreSQL-backed Optuna study.

Real PostgreSQL (the study in schema `optuna`), a real MLflow SQLite store in a temporary
state dir, the real Prefect test server, the real CLI as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.utils.market import store_market
from tests.utils.processes import running

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
START, DAYS = "2025-03-01", 4
END = "2025-03-05"
SPACE = [
    "signal_score_threshold=0.2:0.45",
    "tp_atr_multiple=1:3",
    "cooldown_bars=0:6:2",
    "mtf_min_aligned=1",
]
TRIALS = 8


def _env(database_url: str, state: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALENGINE_")}
    env.update(
        SIGNALENGINE_DATABASE_URL=database_url,
        SIGNALENGINE_STATE_DIR=str(state),
        SIGNALENGINE_SYMBOLS=json.dumps(SYMBOLS),
        SIGNALENGINE_EXCHANGE="binance",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    return env


def _args(study: str, out: Path, *, workers: int = 0) -> list[str]:
    args = ["optimize", "default", "--symbols", ",".join(SYMBOLS), "--workers", str(workers)]
    args += ["--start", START, "--end", END, "--folds", "2", "--min-trades", "2"]
    args += ["--trials", str(TRIALS), "--study", study, "--out", str(out)]
    for flag in SPACE:
        args += ["--param", flag]
    return args


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "signalengine", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def _waiting_on(conn: psycopg.Connection[Any], study: str) -> int:
    """Sessions waiting for the study's claim lock (held by the test)."""
    from signalengine.tasks.learning.optimize_study import _LOCK_CLASS

    row = conn.execute(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s AND objid = (hashtext(%s)::bigint & 4294967295)",
        (_LOCK_CLASS, study),
    ).fetchone()
    assert row is not None
    return int(row["n"])


@pytest.fixture
def stored(db):  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, START, DAYS)
    return db


def test_two_processes_share_one_study(
    stored, database_url: str, prefect_harness, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import optuna

    from signalengine.tasks.learning.optimize_study import (
        _LOCK_CLASS,
        DUPLICATE_ATTR,
        storage_url,
    )

    study = f"two-procs-{os.getpid()}-{time.time_ns()}"
    state, out = tmp_path / "state", tmp_path / "best.json"
    env = _env(database_url, state)
    gate = psycopg.connect(database_url, autocommit=True)
    # Hold the study's claim lock until both processes wait on it: then they take turns.
    gate.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, study))
    # One process runs its trials in process, the other on a Dask LocalCluster of 2 workers.
    procs = [
        _start(_args(study, out, workers=2 * i), env, tmp_path / f"p{i}.log") for i in range(2)
    ]
    # Meanwhile (it costs no extra wall time) a bad --param through the real CLI.
    bad_args = ["optimize", "default", "--param", "nosuch=1:2", "--start", START, "--end", END]
    bad = _start(bad_args, env, tmp_path / "bad.log")
    with running([*procs, bad]):
        while _waiting_on(stored, study) < 2:
            assert all(p.poll() is None for p in procs), (tmp_path / "p0.log").read_text()
            time.sleep(0.2)
        gate.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, study))
        outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
        bad_out = bad.communicate(timeout=240)[0].decode()
    gate.close()
    # exit 2, one line, no traceback, nothing on stdout
    bad_lines = (tmp_path / "bad.log").read_text().strip().splitlines()
    assert bad.returncode == 2 and bad_out == "", bad_lines
    assert len(bad_lines) == 1, bad_lines
    assert bad_lines[0].startswith("error: --param nosuch: unknown parameter (known: cooldown_bars")
    logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in outputs]

    # The study: exactly TRIALS trials that count, distinct numbers and parameter sets.
    storage = optuna.storages.RDBStorage(
        storage_url(database_url).render_as_string(hide_password=False)
    )
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    counted = [t for t in trials if DUPLICATE_ATTR not in t.user_attrs]
    assert len(counted) == TRIALS
    assert len({t.number for t in counted}) == TRIALS
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == TRIALS
    assert {t.state.name for t in counted} <= {"COMPLETE", "PRUNED"}
    assert sum(t.state.name == "COMPLETE" for t in counted) >= 2
    here = [s["trials_here"] for s in summaries]
    assert sum(here) == TRIALS and min(here) >= 1, here
    assert all(s["study_trials"] == TRIALS for s in summaries)
    assert [s["dask"] for s in summaries] == [False, True]
    assert _task_run_trials(summaries[0]) | _task_run_trials(summaries[1]) == {
        t.number for t in counted
    }

    # MLflow: each invocation's parent run lists the trials it ran as child runs.
    from signalengine.tasks.learning.optimize_tracking import EXPERIMENT, PARENT_TAG
    from signalengine.tasks.learning.registry import mlflow_client, quiet_mlflow

    uri = f"sqlite:///{(state / 'mlflow' / 'mlflow.db').resolve()}"
    with quiet_mlflow():
        client = mlflow_client(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        numbers: list[int] = []
        for s in summaries:
            parent = client.get_run(s["mlflow_run_id"])
            assert parent.data.params["strategy"] == "default"
            assert parent.data.params["folds"] == "2"
            children = client.search_runs(
                [experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{s['mlflow_run_id']}'"
            )
            assert len(children) == s["trials_here"]
            mine = [int(c.data.params["trial_number"]) for c in children]
            assert set(mine) == _task_run_trials(s)  # one Prefect task run per trial
            numbers += mine
            assert all("signal_score_threshold" in c.data.params for c in children)
            assert any("fold1_trades" in c.data.metrics for c in children)
        assert sorted(numbers) == sorted(t.number for t in counted)
        for s in summaries:
            final = client.get_run(s["mlflow_run_id"]).data
            assert final.params["best_trial"] == str(s["best_trial"])
            assert final.metrics["best_mean_oos_sharpe"] == s["best_score"]

    # The file (written last by the process finishing last) holds the study's best, loads
    # through the strategy loader and reproduces the best trial's score.
    complete = [t for t in counted if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number))
    document = json.loads(out.read_text())
    assert document["params"] == {**best.params, "mtf_min_aligned": 1}
    _assert_reproduces(out, best.value, database_url)


def _task_run_trials(summary: dict[str, Any]) -> set[int]:
    """Trial numbers of the completed `trial N` task runs of an invocation's flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[summary["flow_run_id"]]))
        )
    names = [r.name for r in runs if r.state is not None and r.state.is_completed()]
    assert len(names) == summary["trials_here"], names
    return {int(n.removeprefix("trial ")) for n in names}


def _assert_reproduces(out: Path, score: float, database_url: str) -> None:
    from signalengine.core.config import Settings
    from signalengine.flows.optimize import build_job, job_bars
    from signalengine.tasks.engine.config import EngineConfig
    from signalengine.tasks.engine.loader import load_strategies
    from signalengine.tasks.learning.optimize import score_strategy

    document = json.loads(out.read_text())
    assert set(document) == {"name", "use", "params"} and document["use"] == "default"
    settings = Settings(symbols=SYMBOLS, exchange="binance", database_url=database_url)
    config = EngineConfig.from_settings(settings)
    (strategy,) = load_strategies(str(out), config)
    job = build_job(
        "default",
        SPACE,
        settings=settings,
        symbols=SYMBOLS,
        start=START,
        end=END,
        folds=2,
        min_trades=2,
    )
    result = score_strategy(strategy, job_bars(job), exchange="binance", min_trades=2)
    assert result.score == score


def test_bad_requests_are_one_line_errors(stored, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """What the CLI turns into `error: ...` and exit 2 (shown end to end in the test above)."""
    from signalengine.core.config import Settings
    from signalengine.core.errors import ConfigurationError
    from signalengine.flows.optimize import build_job

    settings = Settings(symbols=SYMBOLS, database_url=database_url)
    cases = {
        "signal_score_threshold=0.5:2": "--param signal_score_threshold=2.0: Input should be"
        " less than or equal to 1",
        "exit=1:3": "--param exit: not a numeric parameter",
        "exit=atr,sideways": "--param exit=\"sideways\": Input should be 'atr'",
        "cooldown_bars=1.5:4": "--param cooldown_bars: low '1.5' must be an integer",
        "tp_atr_multiple=3:1": "--param tp_atr_multiple: low 3 must be below high",
        "tp_atr_multiple=0:2:log": "--param tp_atr_multiple: a log range needs low > 0",
        "tp_atr_multiple": "--param 'tp_atr_multiple': expected KEY=LOW:HIGH",
    }
    for flag, message in cases.items():
        with pytest.raises(ConfigurationError) as raised:
            build_job("default", [flag], settings=settings, start=START, end=END)
        assert str(raised.value).startswith(message), (flag, str(raised.value))
        assert "\n" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="too short for 40 folds"):
        build_job("default", [], settings=settings, start=START, end="2025-03-01 12:00", folds=40)
    with pytest.raises(ConfigurationError, match="no stored 1m bars of NONE/USDT"):
        build_job("default", [], settings=settings, symbols=["NONE/USDT"], start=START, end=END)
    with pytest.raises(ConfigurationError, match="unknown strategy 'nope'"):
        build_job("nope", [], settings=settings, start=START, end=END)
