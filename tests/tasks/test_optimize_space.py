"""optimize's search space, walk-forward folds and trial claiming (real PostgreSQL study)."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import psycopg
import pytest
from pydantic import Field

from signalengine.core.errors import ConfigurationError
from signalengine.tasks.engine.strategies.default import DefaultParams
from signalengine.tasks.engine.strategy import StrategyParams
from signalengine.tasks.learning.optimize import (
    ParamRange,
    declared_space,
    parse_param,
    parse_space,
    walk_forward,
)
from signalengine.tasks.learning.optimize_study import (
    DUPLICATE_ATTR,
    budget_trials,
    claim_trial,
    distributions,
    open_study,
    storage_url,
)


class _Declared(StrategyParams):
    period: int = Field(20, ge=2, json_schema_extra={"search": {"low": 5, "high": 50, "step": 5}})
    scale: float = Field(
        1.0, gt=0, json_schema_extra={"search": {"low": 0.1, "high": 10, "log": True}}
    )
    mode: str = Field("a", json_schema_extra={"search": {"choices": ["a", "b"]}})
    weight: float = Field(0.5, ge=0, le=1)
    free: float = Field(1.0, gt=0)


def test_param_flags_become_ranges_choices_and_fixed_values() -> None:
    assert parse_param("tp_atr_multiple=1:3", DefaultParams) == ParamRange(
        "tp_atr_multiple", "float", 1.0, 3.0
    )
    assert parse_param("cooldown_bars=0:12:3", DefaultParams) == ParamRange(
        "cooldown_bars", "int", 0.0, 12.0, 3.0
    )
    assert parse_param("sl_atr_multiple=0.5:4:log", DefaultParams).log
    assert parse_param("exit=atr,percent", DefaultParams).choices == ("atr", "percent")
    assert parse_param("mtf_alignment_required=true,false", DefaultParams).choices == (True, False)
    assert parse_param("mtf_min_aligned=1", DefaultParams) == ParamRange(
        "mtf_min_aligned", "fixed", choices=(1,)
    )
    assert parse_param('weights={"ema_cross": 2}', DefaultParams).choices == ({"ema_cross": 2},)
    with pytest.raises(ConfigurationError, match="unknown events"):
        parse_param('events=["nope"]', DefaultParams)
    with pytest.raises(ConfigurationError, match="given twice"):
        parse_space(["tp_pct=1:2", "tp_pct=2:3"], DefaultParams)
    with pytest.raises(ConfigurationError, match="nothing to search"):
        parse_space(["tp_pct=2"], DefaultParams)


def test_declared_space_reads_bounds_and_search_hints() -> None:
    assert [p.name for p in declared_space(DefaultParams)] == ["signal_score_threshold"]
    space = {p.name: p for p in declared_space(_Declared)}
    assert set(space) == {"period", "scale", "mode", "weight"}  # `free` has no upper bound
    assert (space["period"].kind, space["period"].step) == ("int", 5.0)
    assert space["scale"].log and space["mode"].choices == ("a", "b")
    assert (space["weight"].low, space["weight"].high) == (0.0, 1.0)
    dists = distributions(list(space.values()))
    assert dists["period"].step == 5 and dists["scale"].log  # type: ignore[attr-defined]


def test_walk_forward_folds_tile_the_window_in_time_order() -> None:
    start, end = pd.Timestamp("2025-03-01", tz="UTC"), pd.Timestamp("2025-03-05", tz="UTC")
    folds = walk_forward(start, end, 3, primary_timeframe="5m")
    assert len(folds) == 3 and folds[0].warmup_start == start and folds[-1].test_end == end
    for before, after in zip(folds, folds[1:], strict=False):
        assert after.warmup_start == before.test_start  # warm-up = the segment before
        assert after.test_start == before.test_end  # test windows tile, never overlap
    assert all(f.test_start.value % (5 * 60 * 10**9) == 0 for f in folds)
    with pytest.raises(ConfigurationError, match="too short"):
        walk_forward(start, start + pd.Timedelta(hours=1), 2, primary_timeframe="5m")


def test_storage_url_from_uri_and_conninfo() -> None:
    for raw in (
        "postgresql://u:p@db.example:6543/name?sslmode=disable",
        "host=db.example port=6543 user=u password=p dbname=name sslmode=disable",
    ):
        url = storage_url(raw)
        assert (url.drivername, url.host, url.port, url.database) == (
            "postgresql+psycopg",
            "db.example",
            6543,
            "name",
        )
        assert url.query["sslmode"] == "disable" and "search_path=optuna" in url.query["options"]


def test_claims_never_repeat_a_parameter_set_and_stop_when_the_grid_is_exhausted(
    database_url: str,
) -> None:
    """A 3-point grid and a budget of 5: three trials, then the space is exhausted."""
    space = distributions([parse_param("cooldown_bars=0:4:2", DefaultParams)])
    request = {"test": "grid"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        study = open_study(conn, database_url, f"grid-{uuid.uuid4().hex[:8]}", request)
        claimed = []
        while (trial := claim_trial(conn, study, budget=5, space=space)) is not None:
            claimed.append(trial.params["cooldown_bars"])
            study.tell(trial, float(trial.params["cooldown_bars"]))
        assert sorted(claimed) == [0, 2, 4]
        trials = study.get_trials()
        assert len(budget_trials(trials)) == 3
        duplicates = [t for t in trials if DUPLICATE_ATTR in t.user_attrs]
        assert all(t.state.name == "PRUNED" for t in duplicates)
        # The same name for another search is refused, in one line.
        with pytest.raises(ConfigurationError, match="searches something else"):
            open_study(conn, database_url, study.study_name, {"test": "other"})
        # and a budget already spent hands out nothing
        assert claim_trial(conn, study, budget=3, space=space) is None
    assert json.dumps(request)  # the request was JSON-able, as stored


def test_a_trial_failed_as_stale_is_replaced_and_its_late_result_refused(
    database_url: str,
) -> None:
    """What fail_stale_trials does to a dead process's trial (FAIL, no `error`): it no
    longer uses the budget, another claim replaces it, and the late tell is refused."""
    import optuna
    from optuna.trial import TrialState

    from signalengine.flows.optimize import _tell
    from signalengine.tasks.learning.optimize import FoldResult, TrialScore

    space = distributions([parse_param("tp_atr_multiple=1:3", DefaultParams)])
    with psycopg.connect(database_url, autocommit=True) as conn:
        study = open_study(conn, database_url, f"stale-{uuid.uuid4().hex[:8]}", {"t": 1})
        lost = claim_trial(conn, study, budget=1, space=space)
        assert lost is not None and claim_trial(conn, study, budget=1, space=space) is None
        study._storage.set_trial_state_values(lost._trial_id, state=TrialState.FAIL)
        replacement = claim_trial(conn, study, budget=1, space=space)
        assert replacement is not None and replacement.number == lost.number + 1
        late = TrialScore((FoldResult(0, 5, 5, 0.1, 0.1, 0.5, 0.6),), 0.1, None)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            _tell(study, lost, late)
        assert _tell(study, replacement, late) == "COMPLETE"
        assert [t.number for t in budget_trials(study.get_trials())] == [replacement.number]


def test_targets_from_the_setting_and_from_a_class_path() -> None:
    """A configured instance brings its params as the base; a class path gets a loader name."""
    from signalengine.tasks.engine.config import EngineConfig
    from signalengine.tasks.engine.loader import parse_specs
    from signalengine.tasks.learning.optimize import build_strategy, resolve_target, spec_document

    configured = json.dumps(
        [{"name": "wide", "use": "default", "params": {"exit": "percent", "tp_pct": 3.0}}]
    )
    wide = resolve_target("wide", configured)
    assert (wide.name, wide.use, dict(wide.base)) == (
        "wide",
        "default",
        {"exit": "percent", "tp_pct": 3.0},
    )
    doc = spec_document(wide, {"sl_pct": 0.5})
    assert doc == {
        "name": "wide",
        "use": "default",
        "params": {"exit": "percent", "tp_pct": 3.0, "sl_pct": 0.5},
    }
    (spec,) = parse_specs([doc])  # what the loader reads back
    assert spec.params == doc["params"]
    strategy = build_strategy(wide, {"sl_pct": 0.5}, EngineConfig())
    assert (strategy.params.exit, strategy.params.sl_pct) == ("percent", 0.5)  # type: ignore[attr-defined]

    donchian = resolve_target("examples.strategies.donchian:Donchian", None)
    assert (donchian.name, donchian.use) == ("donchian", "examples.strategies.donchian:Donchian")
    assert [p.name for p in declared_space(donchian.cls.Params)] == ["period"]  # ge=2, le=500
    with pytest.raises(ConfigurationError, match="unknown strategy"):
        resolve_target("nosuch", configured)
