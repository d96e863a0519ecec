"""The live AI filter: the `champion` model of `signalengine-filter`, reloaded when it moves.

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from signalengine.core.config import Settings
from signalengine.core.vocabulary import FloatArray
from signalengine.tasks import metrics
from signalengine.tasks.engine.records import SignalFilter
from signalengine.tasks.learning.registry import (
    MODEL_NAME,
    champion_version,
    load_booster,
    mlflow_client,
    store_available,
    tracking_uri,
)
from signalengine.tasks.learning.training import predict_proba

logger = logging.getLogger(__name__)

__all__ = ["ChampionFilter", "booster_filter"]


def booster_filter(model: Any, *, min_probability: float) -> SignalFilter:
    """A SignalFilter scoring candidate rows with `model` (a LightGBM Booster), with metrics."""

    def score(frame: pd.DataFrame) -> FloatArray:
        started = time.perf_counter()
        prob = predict_proba(model, frame)
        metrics.AI_INFERENCE_DURATION.observe(time.perf_counter() - started)
        passed = int(np.count_nonzero(prob >= min_probability))
        if passed:
            metrics.AI_INFERENCE.labels("pass").inc(passed)
        if prob.size - passed:
            metrics.AI_INFERENCE.labels("reject").inc(prob.size - passed)
        return prob

    return score


class ChampionFilter:
    """The current champion as a SignalFilter, re-checked at most every `reload_seconds`."""

    def __init__(
        self,
        *,
        uri: str,
        min_probability: float,
        reload_seconds: float = 30.0,
        model_name: str = MODEL_NAME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uri = uri
        self._min_probability = min_probability
        self._reload_seconds = reload_seconds
        self._model_name = model_name
        self._clock = clock
        self._client: Any = None
        self._next_check = float("-inf")
        self._filter: SignalFilter | None = None
        self._version: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ChampionFilter:
        """The filter of the configured MLflow store, threshold and reload interval."""
        return cls(
            uri=tracking_uri(settings),
            min_probability=settings.ai_min_probability,
            reload_seconds=settings.ai_reload_seconds,
        )

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
            version = self._champion()
        except Exception:  # registry unreachable: keep serving the model we have
            logger.warning("champion check failed; keeping model %s", self._version, exc_info=True)
            return
        if version == self._version:
            return
        if version is None:
            logger.warning("no champion for %s any more; running unfiltered", self._model_name)
            self._filter, self._version = None, None
            return
        try:
            booster = load_booster(self._client, version, uri=self._uri, name=self._model_name)
        except Exception:  # a broken version must not stop the stream
            logger.exception(
                "could not load %s v%s; keeping %s", self._model_name, version, self._version
            )
            return
        self._filter = booster_filter(booster, min_probability=self._min_probability)
        self._version = version
        metrics.AI_MODEL_RELOADS.inc()
        logger.info("AI filter now %s v%s", self._model_name, version)

    def _champion(self) -> str | None:
        if not store_available(self._uri):
            return None
        if self._client is None:
            self._client = mlflow_client(self._uri)
        return champion_version(self._client, name=self._model_name)
