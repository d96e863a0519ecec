"""Feature importance of a fitted model: extraction, a chart, and the `feature_importance` table.

Importances are normalized to sum to 1 (DESIGN §3). LightGBM models report total *gain*
(the loss reduction of every split on the feature); other sklearn-style models report
their `feature_importances_`. A model with no split at all (every importance 0) has *no
importance*: the result is empty, nothing is stored and the chart says so. Equal shares
would present a constant model as if every feature mattered a little.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

__all__ = [
    "extract_importance",
    "importance_frame",
    "plot_importance",
    "store_importance",
]


def _raw_importance(model: Any) -> tuple[list[str], np.ndarray[Any, np.dtype[np.float64]]]:
    """(feature names, unnormalized importances) of a Booster, LGBM* or sklearn model."""
    # A Booster has feature_importance(); an LGBMModel wraps one in booster_ (whose
    # feature_importances_ would report split counts, not gain).
    booster = model if hasattr(model, "feature_importance") else getattr(model, "booster_", None)
    if booster is not None and hasattr(booster, "feature_importance"):
        values = booster.feature_importance(importance_type="gain")
        return list(booster.feature_name()), np.asarray(values, dtype=np.float64)
    if hasattr(model, "feature_importances_"):
        values = np.asarray(model.feature_importances_, dtype=np.float64)
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            names = getattr(model, "feature_name_", None)
        if names is None:
            names = [f"f{i}" for i in range(values.size)]
        return [str(n) for n in names], values
    raise TypeError(f"{type(model).__name__} exposes no feature importance")


def extract_importance(model: Any) -> dict[str, float]:
    """Feature name -> importance in [0, 1], summing to 1, in decreasing order; {} when
    the model has no positive importance at all ("no importance").

    Works for a LightGBM Booster, LGBMClassifier/Regressor (gain) and any model with
    `feature_importances_` (names from `feature_names_in_`, else f0, f1, ...).
    """
    names, values = _raw_importance(model)
    if not names:
        return {}
    values = np.where(np.isfinite(values) & (values > 0), values, 0.0)
    total = float(values.sum())
    if total <= 0:
        return {}
    shares = values / total
    order = sorted(range(len(names)), key=lambda i: (-shares[i], names[i]))
    return {names[i]: float(shares[i]) for i in order}


def importance_frame(importance: dict[str, float]) -> pd.DataFrame:
    """Columns feature_name, importance (decreasing), for the CSV/JSON artifacts."""
    return pd.DataFrame({"feature_name": list(importance), "importance": list(importance.values())})


def plot_importance(importance: dict[str, float], path: Path, *, title: str) -> Path:
    """A horizontal bar chart (PNG) of the importances, largest on top."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart is written to a file
    from matplotlib import pyplot as plt

    names = list(importance)[::-1]
    values = [importance[n] for n in names]
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * max(len(names), 4) + 1.2))
    try:
        if names:
            ax.barh(names, values, color="#3b7dd8")
            ax.set_xlabel("share of total gain")
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no importance: the model made no split", ha="center")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def store_importance(
    conn: psycopg.Connection[Any],
    importance: dict[str, float],
    *,
    model_type: str,
    model_version: str,
) -> int:
    """Upsert one model version's importances into `feature_importance`; returns rows."""
    rows = [(model_type, model_version, name, value) for name, value in importance.items()]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM feature_importance WHERE model_type = %s AND model_version = %s",
            (model_type, model_version),
        )
        cur.executemany(
            "INSERT INTO feature_importance (model_type, model_version, feature_name, importance)"
            " VALUES (%s, %s, %s, %s)",
            rows,
        )
    return len(rows)
