"""The pure signal engine: closed bars of every timeframe in, scored MTF-checked signals out."""

from signalengine.tasks.engine.buckets import ClosedSeries, resample_bars, resample_closed
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.features import FEATURE_COLUMNS, compute_features
from signalengine.tasks.engine.pipeline import (
    evaluate_latest,
    evaluate_latest_batch,
    evaluate_symbol_history,
)
from signalengine.tasks.engine.records import (
    SIGNAL_COLUMNS,
    CooldownState,
    Signal,
    SignalFilter,
    signal_id,
    signals_to_frame,
)

__all__ = [
    "FEATURE_COLUMNS",
    "SIGNAL_COLUMNS",
    "ClosedSeries",
    "CooldownState",
    "EngineConfig",
    "Signal",
    "SignalFilter",
    "compute_features",
    "evaluate_latest",
    "evaluate_latest_batch",
    "evaluate_symbol_history",
    "resample_bars",
    "resample_closed",
    "signal_id",
    "signals_to_frame",
]
