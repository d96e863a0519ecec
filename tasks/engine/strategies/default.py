"""The built-in `default` strategy: the engine's detectors, weighted score, ATR exits.

Its rules are the ones the engine always ran (tasks.engine.events detectors, scored by
tasks.engine.scoring with EVENT_WEIGHTS, the EMA/RSI trend vote of tasks.engine.mtf, TP/SL
at ATR multiples), now tunable by configuration alone: which events run, their weights,
the threshold, the exit rule (atr | percent | risk_reward) and its parameters, expiry,
cooldown and the MTF rule. A parameter left unset takes the engine setting of the same
name (SIGNALENGINE_SIGNAL_SCORE_THRESHOLD, ..._TP_ATR_MULTIPLE, ...), so with no
parameters it emits exactly what the engine emitted before it had strategies.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine import events as events_module
from signalengine.tasks.engine import features as features_module
from signalengine.tasks.engine import mtf as mtf_module
from signalengine.tasks.engine import scoring as scoring_module
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.events import DETECTORS, EVENT_LOOKBACK_BARS, EVENT_TYPES, Frame
from signalengine.tasks.engine.scoring import EVENT_WEIGHTS, score_events
from signalengine.tasks.engine.strategy import (
    Entry,
    Strategy,
    StrategyParams,
    atr_exits,
    percent_exits,
    risk_reward_exits,
)

ExitRule = Literal["atr", "percent", "risk_reward"]
# Params that default to the EngineConfig field of the same name.
_FROM_CONFIG = (
    "signal_score_threshold",
    "cooldown_bars",
    "expiry_bars",
    "tp_atr_multiple",
    "sl_atr_multiple",
    "mtf_alignment_required",
    "mtf_min_aligned",
)

__all__ = ["DefaultParams", "DefaultStrategy", "ExitRule"]


def _known_events(names: list[str]) -> list[str]:
    unknown = sorted(set(names) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown events {unknown} (known: {', '.join(EVENT_TYPES)})")
    return names


class DefaultParams(StrategyParams):
    """Tunables of the default strategy; None = the engine setting of the same name."""

    events: list[str] | None = Field(
        default=None, description="Detectors that run (tasks.engine.events); None: all."
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="Score weight per event, over EVENT_WEIGHTS."
    )
    signal_score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    cooldown_bars: int | None = Field(default=None, ge=0)
    expiry_bars: int | None = Field(default=None, ge=1)
    mtf_alignment_required: bool | None = None
    mtf_min_aligned: int | None = Field(default=None, ge=1)
    exit: ExitRule = Field(
        default="atr",
        description="atr: TP/SL at ATR multiples; percent: at % of entry; risk_reward:"
        " stop at sl_atr_multiple ATRs, target risk_reward times the stop distance.",
    )
    tp_atr_multiple: float | None = Field(default=None, gt=0)
    sl_atr_multiple: float | None = Field(default=None, gt=0)
    tp_pct: float = Field(default=2.0, gt=0, description="percent exit: take profit, % of entry.")
    sl_pct: float = Field(default=1.0, gt=0, description="percent exit: stop loss, % of entry.")
    risk_reward: float = Field(default=2.0, gt=0, description="risk_reward exit: target/stop.")

    @field_validator("events")
    @classmethod
    def _events_known(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _known_events(value)

    @field_validator("weights")
    @classmethod
    def _weights_known(cls, value: dict[str, float]) -> dict[str, float]:
        _known_events(list(value))
        return value


class DefaultStrategy(Strategy):
    """The engine's own rules behind the Strategy interface (see module docstring)."""

    Params = DefaultParams
    params: DefaultParams
    version_sources = (events_module, scoring_module, mtf_module, features_module)

    def resolve(self, params: StrategyParams, config: EngineConfig) -> DefaultParams:
        assert isinstance(params, DefaultParams)
        unset = {name: getattr(config, name) for name in _FROM_CONFIG}
        unset = {k: v for k, v in unset.items() if getattr(params, k) is None}
        return params.model_copy(update=unset) if unset else params

    @property
    def entry_lookback_bars(self) -> int:
        return EVENT_LOOKBACK_BARS

    @property
    def weights(self) -> dict[str, float]:
        """Weights of the events that run, in EVENT_WEIGHTS order (the summation order)."""
        chosen = set(self.params.events if self.params.events is not None else EVENT_TYPES)
        return {
            name: self.params.weights.get(name, weight)
            for name, weight in EVENT_WEIGHTS.items()
            if name in chosen
        }

    def entry(self, frame: Frame) -> Entry:
        chosen = self.weights
        events = {name: detect(frame) for name, detect in DETECTORS.items() if name in chosen}
        direction, score = score_events(events, chosen)
        return Entry(direction=direction, score=score, events=events)

    def fires(self, frame: Frame, entry: Entry) -> NDArray[np.bool_]:
        """A direction, score >= threshold and, for the ATR-based exits, a usable ATR."""
        mask = super().fires(frame, entry)
        if self.params.exit != "percent":
            mask = mask & (np.asarray(frame["atr_14"], dtype=np.float64) > 0)
        return mask

    def exits(
        self, entry_price: FloatArray, side: NDArray[np.int64], frame: Frame
    ) -> tuple[FloatArray, FloatArray]:
        p = self.params
        assert p.tp_atr_multiple is not None and p.sl_atr_multiple is not None  # resolved
        if p.exit == "percent":
            return percent_exits(entry_price, side, p.tp_pct, p.sl_pct)
        atr = np.asarray(frame["atr_14"], dtype=np.float64)
        if p.exit == "risk_reward":
            return risk_reward_exits(entry_price, side, p.sl_atr_multiple * atr, p.risk_reward)
        return atr_exits(entry_price, side, atr, p.tp_atr_multiple, p.sl_atr_multiple)
