"""Strategies used only by tests/tasks/test_strategy_check.py (importable by path)."""

from __future__ import annotations

from examples.strategies.donchian import Donchian


class DonchianWithAtr(Donchian):
    """The Donchian example recording `atr_14` (recursive) but declaring the window's warm-up."""

    @property
    def filter_columns(self) -> tuple[str, ...]:
        return (*super().filter_columns, "atr_14")
