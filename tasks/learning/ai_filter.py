"""The live AI filter of one strategy: the `champion` of `signalengine-filter-<strategy>`
(for `default`, the legacy `signalengine-filter` champion until its own exists: see
tasks.learning.registry), reloaded when it moves.

`ChampionFilter.current()` returns `(signal_filter, model_version)` for
`tasks.engine.pipeline.evaluate_latest` / `evaluate_symbol_history`. It asks the registry which
version `champion` points at no more often than every `reload_seconds` (one small
registry read), and downloads a model only when that version changed, so a promotion
reaches a running stream without a restart. With no store, no registered model or no
champion alias, it returns `(None, None)` and the engine runs unfiltered. When the store
cannot be reached, the model already loaded stays in use.

The filter returns P(take profit before stop loss) per candidate row; the engine drops
rows below `ai_min_probability`. It counts `ai_inference_total{decision="pass"|"reject"}`
(by that same threshold) and times each batch in `ai_inference_duration_seconds`; every
model (re)load counts in `ai_model_reloads_total`.

It also remembers whether each of the last `window` scored candidates passed. When a
champion rejected every one of them the engine is silenced: `health()` says
`rejecting_all`, `report()` sets `ai_filter_rejecting_all` and writes the shard's row of
`ai_filter_health`, which `/health` reads (status `degraded`). A new champion starts a
fresh window.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signalengine.core.config import Settings
from signalengine.core.db import DbConn
from signalengine.core.vocabulary import DEFAULT_STRATEGY, FloatArray
from signalengine.tasks import metrics
from signalengine.tasks.engine.records import SignalFilter
from signalengine.tasks.learning.registry import (
    champion_of,
    champion_version,
    load_booster,
    mlflow_client,
    store_available,
    tracking_uri,
)
from signalengine.tasks.learning.registry import (
    model_name as registry_model_name,
)
from signalengine.tasks.learning.training import predict_proba

logger = logging.getLogger(__name__)

__all__ = ["ChampionFilter", "FilterHealth", "booster_filter"]


@dataclass(frozen=True)
class FilterHealth:
    """The live filter over its window: model in use, candidates scored and passed."""

    model_version: str | None
    scored: int
    passed: int
    window: int

    @property
    def rejecting_all(self) -> bool:
        """A full window of candidates, none let through: the engine emits nothing."""
        return self.model_version is not None and self.scored >= self.window and self.passed == 0


def booster_filter(
    model: Any, *, min_probability: float, window: deque[bool] | None = None
) -> SignalFilter:
    """A SignalFilter scoring candidate rows with `model` (a LightGBM Booster), with metrics.

    Each candidate's pass/reject decision is appended to `window` when given.
    """

    def score(frame: pd.DataFrame) -> FloatArray:
        started = time.perf_counter()
        prob = predict_proba(model, frame)
        metrics.AI_INFERENCE_DURATION.observe(time.perf_counter() - started)
        decisions = prob >= min_probability
        if window is not None:
            window.extend(bool(d) for d in decisions)
        passed = int(np.count_nonzero(decisions))
        if passed:
            metrics.AI_INFERENCE.labels("pass").inc(passed)
        if prob.size - passed:
            metrics.AI_INFERENCE.labels("reject").inc(prob.size - passed)
        return prob

    return score


class ChampionFilter:
    """A strategy's current champion as a SignalFilter, re-checked at most every
    `reload_seconds`. `model_name` pins one registered model instead (no legacy fallback)."""

    def __init__(
        self,
        *,
        uri: str,
        min_probability: float,
        reload_seconds: float = 30.0,
        strategy: str = DEFAULT_STRATEGY,
        model_name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        window: int = 20,
    ) -> None:
        self.strategy = strategy
        self._pinned = model_name
        self._uri = uri
        self._min_probability = min_probability
        self._reload_seconds = reload_seconds
        self._model_name = model_name or registry_model_name(strategy)
        self._clock = clock
        self._client: Any = None
        self._next_check = float("-inf")
        self._filter: SignalFilter | None = None
        self._version: str | None = None
        self._window: deque[bool] = deque(maxlen=window)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, strategy: str = DEFAULT_STRATEGY
    ) -> ChampionFilter:
        """A strategy's filter on the configured MLflow store, threshold and reload interval."""
        return cls(
            uri=tracking_uri(settings),
            min_probability=settings.ai_min_probability,
            reload_seconds=settings.ai_reload_seconds,
            strategy=strategy,
            window=settings.ai_degraded_window_candidates,
        )

    @property
    def model_name(self) -> str:
        """The registered model served (or looked for): the strategy's, or the legacy one."""
        return self._model_name

    @property
    def model_version(self) -> str | None:
        """The loaded champion version (None: no model, the engine runs unfiltered)."""
        return self._version

    def current(self) -> tuple[SignalFilter | None, str | None]:
        """(filter, model_version) to pass to the engine; (None, None) without a champion."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._reload_seconds
            self.refresh()
        return self._filter, self._version

    def refresh(self) -> None:
        """Check the alias now and load the model it points at if it changed."""
        try:
            found = self._champion()
        except Exception:  # registry unreachable: keep serving the model we have
            logger.warning("champion check failed; keeping model %s", self._version, exc_info=True)
            return
        name, version = found if found is not None else (self._model_name, None)
        if (name, version) == (self._model_name, self._version):
            return
        if version is None:
            logger.warning("no champion for %s any more; running unfiltered", self._model_name)
            self._filter, self._version = None, None
            self._window.clear()
            return
        try:
            booster = load_booster(self._client, version, uri=self._uri, name=name)
        except Exception:  # a broken version must not stop the stream
            logger.exception("could not load %s v%s; keeping %s", name, version, self._version)
            return
        self._model_name = name
        self._window.clear()
        self._filter = booster_filter(
            booster, min_probability=self._min_probability, window=self._window
        )
        self._version = version
        metrics.AI_MODEL_RELOADS.inc()
        logger.info("AI filter now %s v%s", self._model_name, version)

    def health(self) -> FilterHealth:
        """How the loaded champion treated the last `window` candidates it scored."""
        maxlen = self._window.maxlen or 1
        return FilterHealth(
            model_version=self._version,
            scored=len(self._window),
            passed=sum(self._window),
            window=maxlen,
        )

    def report(self, conn: DbConn, *, name: str) -> FilterHealth:
        """Set the filter gauges and upsert this shard's `ai_filter_health` row."""
        health = self.health()
        metrics.AI_FILTER_REJECTING_ALL.set(1.0 if health.rejecting_all else 0.0)
        if health.scored:
            metrics.AI_FILTER_WINDOW_PASS_RATIO.set(health.passed / health.scored)
        conn.execute(
            "INSERT INTO ai_filter_health"
            " (name, model_version, scored, passed, rejecting_all, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (name) DO UPDATE SET"
            " model_version = EXCLUDED.model_version, scored = EXCLUDED.scored,"
            " passed = EXCLUDED.passed, rejecting_all = EXCLUDED.rejecting_all,"
            " updated_at = now()",
            (name, health.model_version, health.scored, health.passed, health.rejecting_all),
        )
        return health

    def _champion(self) -> tuple[str, str] | None:
        """(registered model, version) of the champion to serve, None without one."""
        if not store_available(self._uri):
            return None
        if self._client is None:
            self._client = mlflow_client(self._uri)
        if self._pinned is not None:
            version = champion_version(self._client, name=self._pinned)
            return None if version is None else (self._pinned, version)
        return champion_of(self._client, self.strategy)
