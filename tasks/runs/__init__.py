"""The engine's drivers: the live stream's evaluator, backtests/replays and their report."""

from signalengine.tasks.runs.backtest import run_backtest
from signalengine.tasks.runs.history import load_history, store_backtest
from signalengine.tasks.runs.live import LiveEngine
from signalengine.tasks.runs.report import write_report

__all__ = ["LiveEngine", "load_history", "run_backtest", "store_backtest", "write_report"]
