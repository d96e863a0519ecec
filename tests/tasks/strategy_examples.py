"""Strategies used only by tests/tasks/test_strategy_check.py (importable by path)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from examples.strategies.donchian import Donchian
from signalengine.tasks.engine.strategy import Entry, Frame


class DonchianWithAtr(Donchian):
    """The Donchian example recording `atr_14` (recursive) but declaring the window's warm-up."""

    @property
    def filter_columns(self) -> tuple[str, ...]:
        return (*super().filter_columns, "atr_14")


class Silent(Donchian):
    """Never fires: a check on it proves nothing."""

    def fires(self, frame: Frame, entry: Entry) -> NDArray[np.bool_]:
        return np.zeros(np.shape(entry.direction), dtype=np.bool_)
