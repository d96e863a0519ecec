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

A process that dies leaves its trials RUNNING: each process beats a heartbeat for its
trials in flight (`Heartbeats`, every HEARTBEAT_SECONDS), and every claim first fails the
trials whose heartbeat is older than GRACE_SECONDS (Optuna's `fail_stale_trials`). Such a
trial does not use up the budget (only a trial whose objective raised, user attr
`error`, does), so another process runs a replacement.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import optuna
import psycopg
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import ExperimentalWarning
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
ERROR_ATTR = "error"
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 120
# Consecutive duplicates after which the space counts as exhausted (a small grid).
MAX_DUPLICATES = 25

logger = logging.getLogger(__name__)

__all__ = [
    "DUPLICATE_ATTR",
    "ERROR_ATTR",
    "Heartbeats",
    "SCHEMA",
    "budget_trials",
    "claim_trial",
    "distributions",
    "grid_size",
    "open_study",
    "quiet_optuna",
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
def quiet_optuna() -> Iterator[None]:
    """Optuna's warnings about what is used on purpose here: heartbeats (experimental)
    with ask/tell (it expects `Study.optimize`, which cannot claim under our lock)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


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
        with quiet_optuna():
            storage = optuna.storages.RDBStorage(
                storage_url(database_url).render_as_string(hide_password=False),
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
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
    """The trials that use up the budget: all but refused duplicates and stale failures
    (a FAIL without `error`: its process died, the trial never ran to the end)."""
    return [
        t
        for t in trials
        if DUPLICATE_ATTR not in t.user_attrs
        and (t.state != TrialState.FAIL or ERROR_ATTR in t.user_attrs)
    ]


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
        with quiet_optuna():
            optuna.storages.fail_stale_trials(study)
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
            with quiet_optuna():
                trial = study.ask(dict(space))
            first = seen.get(_key(trial.params))
            if first is None:
                return trial
            trial.set_user_attr(DUPLICATE_ATTR, first)
            with quiet_optuna():
                study.tell(trial, state=TrialState.PRUNED)
    return None


class Heartbeats:
    """Beat the heartbeat of this process's trials in flight from a daemon thread, as
    `study.optimize` does for its own trials (ask/tell gets no heartbeat otherwise)."""

    def __init__(self, study: optuna.Study) -> None:
        # Optuna's storage of the study and a trial's storage id: not public attributes,
        # but what fail_stale_trials itself reads.
        self._storage = cast(optuna.storages.RDBStorage, study._storage)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def add(self, trial: Trial) -> None:
        self._storage.record_heartbeat(trial._trial_id)
        with self._lock:
            self._ids.add(trial._trial_id)

    def remove(self, trial: Trial) -> None:
        with self._lock:
            self._ids.discard(trial._trial_id)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                ids = sorted(self._ids)
            for trial_id in ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception as error:  # a database hiccup: the next beat may do
                    logger.warning("heartbeat of trial %s failed: %s", trial_id, error)

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
