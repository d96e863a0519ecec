"""The Optuna study of `signalengine optimize`, shared through the project's PostgreSQL.

Optuna's RDB storage keeps studies and trials in the schema `optuna` of the project's
database (SIGNALENGINE_DATABASE_URL through SQLAlchemy's psycopg 3 dialect), apart from
the project's own tables. Any number of `optimize` processes, on any machine reaching
that database, work on one study by name (`load_if_exists`).

A trial is *claimed* under a PostgreSQL advisory lock of the study: count the trials
that use up the budget, ask Optuna for the next parameter set (the sampler sees running
trials too: TPE's constant liar), and refuse a set some other trial already has
(recorded PRUNED with user attr `duplicate_of`, not counted, and asked again). So the
processes together run exactly `--trials` distinct parameter sets, none twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
import psycopg
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import URL

from signalengine.core.errors import ConfigurationError
from signalengine.tasks.learning.optimize import ParamRange

SCHEMA = "optuna"
# Advisory lock keys: (class, hashtext(name)); the class keeps them apart from others'.
_LOCK_CLASS = 0x0F7A
_SETUP_LOCK = "signalengine-optimize-setup"
REQUEST_ATTR = "signalengine_request"
DUPLICATE_ATTR = "duplicate_of"
# Consecutive duplicates after which the space counts as exhausted (a small grid).
MAX_DUPLICATES = 25

__all__ = [
    "DUPLICATE_ATTR",
    "SCHEMA",
    "budget_trials",
    "claim_trial",
    "distributions",
    "grid_size",
    "open_study",
    "request_digest",
    "storage_url",
    "study_lock",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(database_url: str) -> URL:
    """The SQLAlchemy URL (`postgresql+psycopg://`) of a libpq URL or key=value conninfo,
    with `search_path` set to the optuna schema."""
    parts = psycopg.conninfo.conninfo_to_dict(database_url)
    port = parts.pop("port", None)
    query = {k: str(v) for k, v in parts.items() if k not in {"user", "password", "host", "dbname"}}
    query["options"] = f"{query.get('options', '')} -csearch_path={SCHEMA}".strip()
    return URL.create(
        "postgresql+psycopg",
        username=_str(parts.get("user")),
        password=_str(parts.get("password")),
        host=_str(parts.get("host")),
        port=int(port) if port else None,
        database=_str(parts.get("dbname")),
        query=query,
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)


@contextmanager
def study_lock(conn: psycopg.Connection[Any], name: str) -> Iterator[None]:
    """A session advisory lock on `name`, held by `conn` (autocommit) for the block."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, name))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, name))


def request_digest(request: Mapping[str, Any]) -> str:
    """Short hash of what a study searches (strategy, space, data, folds, rule)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def open_study(
    conn: psycopg.Connection[Any],
    database_url: str,
    name: str,
    request: Mapping[str, Any],
) -> optuna.Study:
    """Create or load study `name`; it must search what `request` describes.

    Schema and Optuna's tables are created under a lock (two processes starting at once
    would race on CREATE TABLE). A study created for another search is refused.
    """
    with study_lock(conn, _SETUP_LOCK):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        storage = optuna.storages.RDBStorage(
            storage_url(database_url).render_as_string(hide_password=False),
            engine_kwargs={"pool_pre_ping": True},
        )
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(constant_liar=True),
            load_if_exists=True,
        )
        stored = study.user_attrs.get(REQUEST_ATTR)
        wanted = json.loads(json.dumps(request, default=str))
        if stored is None:
            study.set_user_attr(REQUEST_ATTR, wanted)
        elif stored != wanted:
            raise ConfigurationError(
                f"study {name!r} searches something else ({_difference(stored, wanted)});"
                " use another --study"
            )
    return study


def _difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    keys = sorted(k for k in {*stored, *wanted} if stored.get(k) != wanted.get(k))
    return ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here" for k in keys[:2])


def distributions(space: Sequence[ParamRange]) -> dict[str, BaseDistribution]:
    """Optuna distributions of the searched params (fixed ones are not searched)."""
    out: dict[str, BaseDistribution] = {}
    for p in space:
        if p.kind == "fixed":
            continue
        if p.kind == "categorical":
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None
            step = int(p.step) if p.step else 1
            out[p.name] = IntDistribution(int(p.low), int(p.high), step=step, log=p.log)
        else:
            assert p.low is not None and p.high is not None
            out[p.name] = FloatDistribution(p.low, p.high, step=p.step, log=p.log)
    return out


def budget_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up the budget: every one but the refused duplicates."""
    return [t for t in trials if DUPLICATE_ATTR not in t.user_attrs]


def grid_size(space: Mapping[str, BaseDistribution]) -> int | None:
    """How many distinct sets a finite space holds (ints, stepped floats, choices), else None."""
    size = 1
    for dist in space.values():
        if isinstance(dist, CategoricalDistribution):
            size *= len(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            size *= (dist.high - dist.low) // dist.step + 1
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            size *= int(round((dist.high - dist.low) / dist.step)) + 1
        else:
            return None
    return size


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def claim_trial(
    conn: psycopg.Connection[Any],
    study: optuna.Study,
    *,
    budget: int,
    space: Mapping[str, BaseDistribution],
) -> Trial | None:
    """The next trial to run with a parameter set no other trial has; None when the
    study already has `budget` trials (finished or running) or the space is exhausted."""
    with study_lock(conn, study.study_name):
        seen: dict[str, int] = {}
        trials = study.get_trials(deepcopy=False)
        for t in budget_trials(trials):
            seen.setdefault(_key(t.params), t.number)
        if len(budget_trials(trials)) >= budget:
            return None
        finite = grid_size(space)
        if finite is not None and len(seen) >= finite:
            return None  # every set of the grid has been claimed
        for _ in range(MAX_DUPLICATES):
            trial = study.ask(dict(space))
            first = seen.get(_key(trial.params))
            if first is None:
                return trial
            trial.set_user_attr(DUPLICATE_ATTR, first)
            study.tell(trial, state=TrialState.PRUNED)
    return None
