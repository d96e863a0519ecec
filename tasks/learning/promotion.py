"""Whether a retrained filter has earned the `champion` alias against the unfiltered engine.

A filter that cannot be told apart from chance on its holdout only throws signals away
(a single-leaf model scoring every row 0.31 rejects them all), so before a model may
replace anything it must beat *no filter at all* on the holdout:

- enough evidence: at least `min_holdout_rows` holdout candidates and
  `min_holdout_positives` take-profit labels among them;
- ranking better than chance by a margin unlikely to be luck: the one-sided DeLong lower
  confidence bound of the holdout AUC (at `auc_confidence`) lies above 0.5;
- a better trade set: the win rate *or* the mean return of the candidates it lets through
  is higher than that of all holdout candidates;
- a plausible pass rate, within [`min_pass_rate`, `max_pass_rate`] (a filter passing
  nothing silences the engine, one passing everything does nothing).

`rejection_reasons` lists every failed condition in words; an empty list means earned.
DeLong et al. (1988) variance of one AUC, with midranks for ties (Sun & Xu, 2014).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.config import Settings

__all__ = ["PromotionPolicy", "auc_lower_bound", "delong_auc", "rejection_reasons"]


@dataclass(frozen=True)
class PromotionPolicy:
    """Bars a new model must clear against the unfiltered baseline (see module docstring)."""

    min_holdout_rows: int = 30
    min_holdout_positives: int = 10
    auc_confidence: float = 0.95
    min_pass_rate: float = 0.05
    max_pass_rate: float = 0.95

    @classmethod
    def from_settings(cls, settings: Settings) -> PromotionPolicy:
        """The policy configured by `SIGNALENGINE_AI_PROMOTION_*`."""
        return cls(
            min_holdout_rows=settings.ai_promotion_min_holdout_rows,
            min_holdout_positives=settings.ai_promotion_min_holdout_positives,
            auc_confidence=settings.ai_promotion_auc_confidence,
            min_pass_rate=settings.ai_promotion_min_pass_rate,
            max_pass_rate=settings.ai_promotion_max_pass_rate,
        )


def delong_auc(label: NDArray[Any], score: NDArray[Any]) -> tuple[float, float]:
    """(AUC, DeLong standard error) of `score` against binary `label`; NaNs with one class."""
    y = np.asarray(label, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    rank_all = pd.Series(s).rank(method="average").to_numpy()
    rank_pos = pd.Series(s[y]).rank(method="average").to_numpy()
    rank_neg = pd.Series(s[~y]).rank(method="average").to_numpy()
    v10 = (rank_all[y] - rank_pos) / n  # per positive: share of negatives it outranks
    v01 = 1.0 - (rank_all[~y] - rank_neg) / m  # per negative: share of positives above it
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    return auc, float(math.sqrt(max(var, 0.0)))


def auc_lower_bound(label: NDArray[Any], score: NDArray[Any], *, confidence: float) -> float:
    """One-sided lower confidence bound of the AUC (normal approximation, DeLong SE)."""
    auc, se = delong_auc(label, score)
    if math.isnan(auc):
        return float("nan")
    return auc - NormalDist().inv_cdf(confidence) * se


def _fmt(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.4f}"


def rejection_reasons(
    metrics: Mapping[str, float],
    *,
    label: NDArray[Any],
    prob: NDArray[Any],
    policy: PromotionPolicy,
) -> list[str]:
    """Why the model has not earned promotion over the unfiltered engine ([] = earned).

    `metrics` are `training.evaluate` holdout metrics; `label` and `prob` the holdout
    labels and the model's probabilities (for the AUC bound).
    """
    reasons: list[str] = []
    rows = len(label)
    positives = int(np.asarray(label, dtype=bool).sum())
    if rows < policy.min_holdout_rows:
        reasons.append(f"{rows} holdout candidates < {policy.min_holdout_rows}")
    if positives < policy.min_holdout_positives:
        reasons.append(f"{positives} holdout take-profits < {policy.min_holdout_positives}")
    bound = auc_lower_bound(label, prob, confidence=policy.auc_confidence)
    if not bound > 0.5:
        reasons.append(
            f"holdout AUC {_fmt(metrics['auc'])} not above chance: its"
            f" {policy.auc_confidence:.0%} lower bound is {_fmt(bound)} <= 0.5"
        )
    win, base_win = metrics["filtered_win_rate"], metrics["base_win_rate"]
    ret, base_ret = metrics["filtered_avg_return_pct"], metrics["base_avg_return_pct"]
    if not (win > base_win or ret > base_ret):
        reasons.append(
            f"filtered win rate {_fmt(win)} / avg return {_fmt(ret)} % do not beat the"
            f" unfiltered {_fmt(base_win)} / {_fmt(base_ret)} %"
        )
    pass_rate = metrics["pass_rate"]
    if not policy.min_pass_rate <= pass_rate <= policy.max_pass_rate:
        reasons.append(
            f"pass rate {_fmt(pass_rate)} outside"
            f" [{policy.min_pass_rate:g}, {policy.max_pass_rate:g}]"
        )
    return reasons
