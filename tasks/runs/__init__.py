"""The engine's drivers: the live stream's evaluator, backtests/replays and their report.

Exports load on first use (PEP 562): a backtest process never imports the live driver's
model stack (LightGBM, scikit-learn, SciPy) nor the report's matplotlib unless it needs
them, which was most of `signalengine backtest`'s start-up time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalengine.tasks.runs.backtest import run_backtest
    from signalengine.tasks.runs.history import load_history, store_backtest
    from signalengine.tasks.runs.live import LiveEngine
    from signalengine.tasks.runs.report import write_report

_EXPORTS = {
    "LiveEngine": "live",
    "load_history": "history",
    "run_backtest": "backtest",
    "store_backtest": "history",
    "write_report": "report",
}
__all__ = ["LiveEngine", "load_history", "run_backtest", "store_backtest", "write_report"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
