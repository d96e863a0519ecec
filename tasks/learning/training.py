"""Fit and evaluate the AI filter: a LightGBM classifier of P(take profit before stop loss).

Rows come from `tasks.learning.labels.build_dataset`. The split is by time: the newest
`holdout_fraction` of candidates (by `emitted_at`) is the holdout and starts at
`holdout_start`. Training rows are the older ones, less

- purged rows, whose label window [emitted_at, expires_at] reaches the holdout start
  (their label was decided by bars the holdout also sees), and
- embargoed rows, emitted within `embargo` before the holdout start (a gap after the
  train end, against serial correlation between neighbouring candidates).

Metrics on the holdout (`evaluate`): AUC, log loss, precision at the filter threshold
(share of take-profit labels among rows scored >= threshold), pass rate, and the win rate
(return_pct > 0, after fees) and mean return (percent) of all holdout candidates ("base")
against those the filter lets through ("filtered"). Undefined values are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.config import Settings
from signalengine.core.errors import SignalEngineError
from signalengine.core.vocabulary import FloatArray, IntArray
from signalengine.tasks.learning.labels import LABEL_COLUMN, MODEL_COLUMNS

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
MIN_TRAIN_ROWS = 30
MIN_HOLDOUT_ROWS = 10
_EPS = 1e-15

__all__ = [
    "DEFAULT_PARAMS",
    "InsufficientDataError",
    "Split",
    "TrainingConfig",
    "TrainingResult",
    "evaluate",
    "fit_booster",
    "log_loss",
    "predict_proba",
    "roc_auc",
    "time_split",
    "train_filter",
]


class InsufficientDataError(SignalEngineError):
    """Too few labelled candidates (or one class only) to train; the retrain is skipped."""


@dataclass(frozen=True)
class TrainingConfig:
    """Split and booster settings (mirror `core.config.Settings`, see there)."""

    holdout_fraction: float = 0.2
    embargo: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(minutes=60))
    num_boost_round: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_probability: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingConfig:
        """The training config of a Settings object."""
        return cls(
            holdout_fraction=settings.retrain_holdout_fraction,
            embargo=pd.Timedelta(minutes=settings.retrain_embargo_minutes),
            num_boost_round=settings.retrain_num_boost_round,
            learning_rate=settings.retrain_learning_rate,
            num_leaves=settings.retrain_num_leaves,
            min_probability=settings.ai_min_probability,
        )

    def booster_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """LightGBM parameters: defaults, this config, then `overrides`."""
        params = {
            **DEFAULT_PARAMS,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
        }
        params.update(overrides or {})
        return params


@dataclass(frozen=True)
class Split:
    """Row positions of a time-ordered split and what was dropped between the parts."""

    train: IntArray
    holdout: IntArray
    holdout_start: pd.Timestamp
    purged: int
    embargoed: int


@dataclass(frozen=True)
class TrainingResult:
    """A fitted filter with its split, holdout rows and holdout metrics."""

    booster: lgb.Booster
    params: dict[str, Any]
    num_boost_round: int
    split: Split
    holdout: pd.DataFrame  # the model columns + label + return_pct of the holdout rows
    metrics: dict[str, float]


def _times_ns(values: pd.Series) -> IntArray:
    times = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return np.asarray(times.as_unit("ns").asi8, dtype=np.int64)


def time_split(dataset: pd.DataFrame, *, holdout_fraction: float, embargo: pd.Timedelta) -> Split:
    """Purged, embargoed time split of rows with UTC `emitted_at` and `expires_at`.

    The holdout is every row emitted at or after `holdout_start`, the emission time of the
    row at position ceil(n * (1 - holdout_fraction)) in time order. Training rows satisfy
    expires_at < holdout_start (purge) and emitted_at < holdout_start - embargo (embargo).
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1)")
    n = len(dataset)
    if n < 2:
        raise InsufficientDataError(f"{n} labelled candidates; need at least 2 to split")
    emitted = _times_ns(dataset["emitted_at"])
    expires = _times_ns(dataset["expires_at"])
    cut_pos = min(n - 1, math.ceil(n * (1.0 - holdout_fraction)))
    cut = int(np.sort(emitted)[cut_pos])
    before = emitted < cut
    purged = before & (expires >= cut)
    embargoed = before & ~purged & (emitted >= cut - int(embargo.value))
    train = before & ~purged & ~embargoed
    return Split(
        train=np.flatnonzero(train).astype(np.int64),
        holdout=np.flatnonzero(~before).astype(np.int64),
        holdout_start=pd.Timestamp(cut, unit="ns", tz="UTC"),
        purged=int(purged.sum()),
        embargoed=int(embargoed.sum()),
    )


def roc_auc(label: NDArray[Any], score: NDArray[Any]) -> float:
    """Area under the ROC curve (ties count one half); NaN with a single class."""
    y = np.asarray(label, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(score, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(label: NDArray[Any], prob: NDArray[Any]) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to [1e-15, 1 - 1e-15]."""
    y = np.asarray(label, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def _mean(values: FloatArray) -> float:
    return float(values.mean()) if values.size else float("nan")


def evaluate(
    prob: NDArray[Any], label: NDArray[Any], return_pct: NDArray[Any], *, threshold: float
) -> dict[str, float]:
    """Holdout metrics of probabilities `prob` (see the module docstring)."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    ret = np.asarray(return_pct, dtype=np.float64)
    passed = p >= threshold
    return {
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "precision_at_threshold": _mean(y[passed]),
        "pass_rate": _mean(passed.astype(np.float64)),
        "base_tp_rate": _mean(y),
        "base_win_rate": _mean((ret > 0).astype(np.float64)),
        "filtered_win_rate": _mean((ret[passed] > 0).astype(np.float64)),
        "base_avg_return_pct": _mean(ret),
        "filtered_avg_return_pct": _mean(ret[passed]),
    }


def predict_proba(model: Any, frame: pd.DataFrame) -> FloatArray:
    """P(label = 1) per row from a LightGBM Booster, using the model's own input columns.

    `frame` may hold more columns (e.g. the engine's candidate frame); missing ones are NaN.
    """
    names = list(model.feature_name()) if hasattr(model, "feature_name") else list(MODEL_COLUMNS)
    inputs = frame.reindex(columns=names).astype("float64")
    return np.asarray(model.predict(inputs), dtype=np.float64)


def fit_booster(
    train: pd.DataFrame,
    *,
    params: Mapping[str, Any],
    num_boost_round: int,
    columns: Sequence[str] = MODEL_COLUMNS,
) -> lgb.Booster:
    """A binary LightGBM booster on `columns` of `train` against its `label`."""
    data = lgb.Dataset(
        train[list(columns)].astype("float64"),
        label=train[LABEL_COLUMN].to_numpy(dtype=np.float64),
        free_raw_data=True,
    )
    return lgb.train(dict(params), data, num_boost_round=num_boost_round)


def train_filter(
    dataset: pd.DataFrame,
    *,
    config: TrainingConfig,
    params: Mapping[str, Any] | None = None,
    columns: Sequence[str] = MODEL_COLUMNS,
) -> TrainingResult:
    """Split, fit on `columns` (the strategy's `labels.model_columns`) of the training part
    and score the holdout.

    Raises InsufficientDataError when either part is too small or training has one class.
    """
    split = time_split(dataset, holdout_fraction=config.holdout_fraction, embargo=config.embargo)
    train = dataset.iloc[split.train]
    holdout = dataset.iloc[split.holdout]
    if len(train) < MIN_TRAIN_ROWS or len(holdout) < MIN_HOLDOUT_ROWS:
        raise InsufficientDataError(
            f"{len(train)} training / {len(holdout)} holdout rows; need at least "
            f"{MIN_TRAIN_ROWS} / {MIN_HOLDOUT_ROWS}"
        )
    if train[LABEL_COLUMN].nunique() < 2:
        raise InsufficientDataError("training rows hold a single class")
    booster_params = config.booster_params(params)
    booster = fit_booster(
        train, params=booster_params, num_boost_round=config.num_boost_round, columns=columns
    )
    prob = predict_proba(booster, holdout)
    metrics = evaluate(
        prob,
        holdout[LABEL_COLUMN].to_numpy(),
        holdout["return_pct"].to_numpy(),
        threshold=config.min_probability,
    )
    metrics.update(
        {
            "train_rows": float(len(train)),
            "holdout_rows": float(len(holdout)),
            "purged_rows": float(split.purged),
            "embargoed_rows": float(split.embargoed),
            "train_tp_rate": float(train[LABEL_COLUMN].mean()),
        }
    )
    kept = [*columns, LABEL_COLUMN, "return_pct"]
    return TrainingResult(
        booster=booster,
        params=booster_params,
        num_boost_round=config.num_boost_round,
        split=split,
        holdout=holdout[kept].reset_index(drop=True),
        metrics=metrics,
    )
