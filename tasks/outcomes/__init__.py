"""Outcomes: settlement, signal and performance stores, trade statistics, rollups, controls."""

from signalengine.tasks.outcomes.controls import SymbolControl, decide_controls
from signalengine.tasks.outcomes.rollups import compute_rollups, refresh_rollups
from signalengine.tasks.outcomes.settle import settle_open, write_performance
from signalengine.tasks.outcomes.settlement import Settlement, settle_signal, settle_signals
from signalengine.tasks.outcomes.signals import insert_signals

__all__ = [
    "Settlement",
    "SymbolControl",
    "compute_rollups",
    "decide_controls",
    "insert_signals",
    "refresh_rollups",
    "settle_open",
    "settle_signal",
    "settle_signals",
    "write_performance",
]
