"""The engine's tunables, independent of the app's settings class.

`EngineConfig.from_settings` reads each field by name from any object that has it (the
app's `Settings` has all of them, with the same names and documentation), so the pure
engine never imports the settings class and no field list is kept by hand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from signalengine.core.vocabulary import TIMEFRAME_MINUTES

DEFAULT_LIVE_WINDOW_BARS = 1000

__all__ = ["DEFAULT_LIVE_WINDOW_BARS", "EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """The engine's tunables; each field is documented on the `Settings` field of its name."""

    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    primary_timeframe: str = "5m"
    mtf_alignment_required: bool = True
    mtf_min_aligned: int = 2
    signal_score_threshold: float = 0.5
    cooldown_bars: int = 3
    tp_atr_multiple: float = 2.0
    sl_atr_multiple: float = 1.0
    expiry_bars: int = 12
    fee_bps: float = 10.0
    slippage_bps: float = 0.0
    live_window_bars: int = DEFAULT_LIVE_WINDOW_BARS
    ai_min_probability: float = 0.5

    def __post_init__(self) -> None:
        unknown = [tf for tf in self.timeframes if tf not in TIMEFRAME_MINUTES]
        if unknown or self.primary_timeframe not in TIMEFRAME_MINUTES:
            raise ValueError(f"unknown timeframes {unknown or [self.primary_timeframe]}")
        # Sorted by length, de-duplicated, and always holding the primary timeframe.
        ordered = sorted(
            {*self.timeframes, self.primary_timeframe}, key=TIMEFRAME_MINUTES.__getitem__
        )
        object.__setattr__(self, "timeframes", tuple(ordered))

    @classmethod
    def from_settings(cls, settings: object) -> EngineConfig:
        """The config whose every field is the attribute of the same name of `settings`."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    @property
    def cost_pct(self) -> float:
        """Fees plus slippage as a percentage of the entry (subtracted from return_pct)."""
        return (self.fee_bps + self.slippage_bps) / 100.0
