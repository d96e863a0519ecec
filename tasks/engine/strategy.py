"""The Strategy interface: what a trading idea tells the engine, and nothing about how it runs.

The engine (tasks.engine.pipeline) owns bars, features, MTF bookkeeping, the AI filter,
cooldowns, records and both drivers (backtest over a history, live bar by bar); a
strategy owns the *rules*. Per symbol the engine computes the standard features
(tasks.engine.features.FEATURE_COLUMNS) of each timeframe once and hands the same arrays
to every strategy, so N strategies cost one feature pass plus N rule evaluations.

A strategy declares:

- `Params`: a pydantic model (subclass of `StrategyParams`, unknown keys refused) of its
  tunables; the loader validates user JSON/TOML against it (tasks.engine.loader);
- `timeframes`: the timeframes it reads (the ones that vote; a subset of the engine's);
- `lookback_bars`: warm-up, the bars of history after which its signals no longer depend
  on where the history starts (recursive indicators' seeds decayed);
- `entry_lookback_bars`: how many bars before a row its entry rule reads from the frame
  (the live path scores only the last `entry_lookback_bars + 1` rows);
- `entry(frame)`: direction int8 in {-1, 0, 1} and score in [0, 1] per bar, plus the events
  it reports; vectorized over one series (1-D columns) or a stacked batch (2-D: one
  series per row, bars along the last axis). A value at bar i may read bars <= i only;
- `fires(frame, entry)`: the candidate mask before MTF (default: a direction and
  score >= `score_threshold`);
- `vote(frame)`: its multi-timeframe vote (+1/-1/0) per bar of one timeframe's series;
- `exits(entry_price, side, frame)`: take profit and stop loss of each candidate (helpers
  `atr_exits`, `percent_exits`, `risk_reward_exits`), `expiry_bars` its lifetime;
- `filter_columns`: the feature columns the AI filter scores and the signal records.

Worked example (a Donchian breakout with a percent stop; see README "Writing a strategy")::

    from pydantic import Field
    from signalengine.tasks.engine.strategy import (
        Entry, Strategy, StrategyParams, percent_exits, rolling_extreme)

    class DonchianParams(StrategyParams):
        period: int = Field(20, ge=2, description="Channel length in bars.")
        stop_pct: float = Field(1.0, gt=0, description="Stop loss, % of entry.")
        target_pct: float = Field(2.0, gt=0, description="Take profit, % of entry.")

    class Donchian(Strategy):
        Params = DonchianParams
        params: DonchianParams

        @property
        def entry_lookback_bars(self) -> int:
            return self.params.period

        def entry(self, frame):
            close = np.asarray(frame["close"], dtype=np.float64)
            high = rolling_extreme(frame["high"], self.params.period, np.fmax, shift=1)
            low = rolling_extreme(frame["low"], self.params.period, np.fmin, shift=1)
            direction = (close > high).astype(np.int8) - (close < low).astype(np.int8)
            return Entry(direction, np.abs(direction).astype(np.float64))

        def exits(self, entry_price, side, frame):
            return percent_exits(entry_price, side, self.params.target_pct,
                                 self.params.stop_pct)

Its `vote` (the default: EMA trend + RSI midline) and `filter_columns` are inherited.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from signalengine.core.vocabulary import DEFAULT_STRATEGY, FloatArray
from signalengine.tasks.engine.config import DEFAULT_LIVE_WINDOW_BARS, EngineConfig
from signalengine.tasks.engine.events import EventSeries, Frame
from signalengine.tasks.engine.features import FEATURE_COLUMNS
from signalengine.tasks.engine.mtf import vote as trend_vote

VERSION_CHARS = 16

__all__ = [
    "DEFAULT_STRATEGY",
    "Entry",
    "Frame",
    "Strategy",
    "StrategyParams",
    "atr_exits",
    "canonical_params",
    "percent_exits",
    "risk_reward_exits",
    "rolling_extreme",
]


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: frozen, and unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry:
    """A strategy's per-bar entry rule output, same shape as the frame's columns.

    `direction` int8 in {-1, 0, 1}; `score` in [0, 1]; `events` the named events it
    reports (recorded on each signal, in this order, where their direction is non-zero);
    `features` extra per-bar columns of its own, handed to the AI filter and recorded
    when named in `filter_columns`.
    """

    direction: NDArray[np.int8]
    score: FloatArray
    events: Mapping[str, EventSeries] = field(default_factory=dict)
    features: Mapping[str, FloatArray] = field(default_factory=dict)


def canonical_params(params: BaseModel) -> str:
    """Parameters as canonical JSON (sorted keys, no spaces): the input of `version`."""
    return json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _source_of(obj: type | ModuleType) -> str:
    """Source text of a class's module (or a module); the qualified name if unavailable."""
    module = obj if isinstance(obj, ModuleType) else sys.modules.get(obj.__module__)
    try:
        return inspect.getsource(module if module is not None else obj)
    except (OSError, TypeError):  # defined in a REPL or a frozen build
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}"


class Strategy(ABC):
    """Base class of strategies; subclass it, set `Params`, implement `entry` and `exits`.

    Instances are immutable and bound to the engine's config (`EngineConfig`: primary
    timeframe, timeframes, the engine-wide defaults). `name` is the instance's name in
    SIGNALENGINE_STRATEGIES (two instances of one class with different params have
    different names); signals record it with `version`.
    """

    Params: ClassVar[type[StrategyParams]] = StrategyParams
    # Extra modules whose code the strategy's behaviour depends on (hashed into version).
    version_sources: ClassVar[tuple[ModuleType, ...]] = ()

    def __init__(
        self,
        params: StrategyParams | Mapping[str, Any] | None = None,
        *,
        name: str,
        config: EngineConfig | None = None,
    ) -> None:
        if params is None or isinstance(params, Mapping):
            params = self.Params.model_validate(dict(params or {}))
        elif not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__name__} parameters")
        self.name = name
        self.config = config or EngineConfig()
        self.params = self.resolve(params, self.config)
        self._threshold_override: float | None = None

    def resolve(self, params: StrategyParams, config: EngineConfig) -> StrategyParams:
        """Fill what the params leave to the engine config (the default strategy does)."""
        return params

    def with_config(self, config: EngineConfig) -> Strategy:
        """The same strategy and params bound to another engine config."""
        return type(self)(self.params, name=self.name, config=config)

    def controlled(self, score_threshold: float | None) -> Strategy:
        """A copy whose `score_threshold` is an adaptive control's (version unchanged:
        controls are runtime state kept in symbol_controls, not the strategy's identity)."""
        if score_threshold is None:
            return self
        clone = type(self)(self.params, name=self.name, config=self.config)
        clone._threshold_override = score_threshold
        clone.__dict__["version"] = self.version
        return clone

    @cached_property
    def version(self) -> str:
        """Hash of the strategy's code (its module, `version_sources`), its class (two
        classes of one module differ) and parameters."""
        digest = hashlib.sha256()
        digest.update(f"{type(self).__module__}:{type(self).__qualname__}\0".encode())
        sources: tuple[type | ModuleType, ...] = (type(self), *self.version_sources)
        for source in sources:
            digest.update(_source_of(source).encode())
            digest.update(b"\0")
        digest.update(canonical_params(self.params).encode())
        return digest.hexdigest()[:VERSION_CHARS]

    # -- what it reads ---------------------------------------------------------------
    @property
    def primary_timeframe(self) -> str:
        """The timeframe whose closing bars trigger its signals (the engine's)."""
        return self.config.primary_timeframe

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Timeframes that cast MTF votes (default: all the engine's), shortest first."""
        return self.config.timeframes

    @property
    def lookback_bars(self) -> int:
        """Warm-up in primary bars: signals past it do not depend on the history's start."""
        return DEFAULT_LIVE_WINDOW_BARS

    @property
    def entry_lookback_bars(self) -> int:
        """Bars before a row that `entry` reads (the live path scores this many + 1)."""
        return 0

    @property
    def filter_columns(self) -> tuple[str, ...]:
        """Feature columns the AI filter scores and each signal records (`features`)."""
        return FEATURE_COLUMNS

    # -- rules -----------------------------------------------------------------------
    def _param(self, name: str, fallback: Any) -> Any:
        """The params' `name` if it has one (not None), else the engine config's."""
        value = getattr(self.params, name, None)
        return fallback if value is None else value

    @property
    def score_threshold(self) -> float:
        """Minimum score of a candidate (an adaptive control's when one applies)."""
        if self._threshold_override is not None:
            return self._threshold_override
        return float(self._param("signal_score_threshold", self.config.signal_score_threshold))

    @property
    def cooldown_bars(self) -> int:
        """Primary bars after a signal in which the same side may not fire again."""
        return int(self._param("cooldown_bars", self.config.cooldown_bars))

    @property
    def expiry_bars(self) -> int:
        """Lifetime of a signal in primary bars after its trigger bar closes."""
        return int(self._param("expiry_bars", self.config.expiry_bars))

    @property
    def mtf_alignment_required(self) -> bool:
        """Drop candidates fewer than `mtf_min_aligned` timeframes back."""
        return bool(self._param("mtf_alignment_required", self.config.mtf_alignment_required))

    @property
    def mtf_min_aligned(self) -> int:
        """Timeframes whose vote must agree with the signal's direction."""
        return int(self._param("mtf_min_aligned", self.config.mtf_min_aligned))

    @abstractmethod
    def entry(self, frame: Frame) -> Entry:
        """Direction and score per bar of the primary timeframe (1-D or stacked 2-D)."""

    def fires(self, frame: Frame, entry: Entry) -> NDArray[np.bool_]:
        """Candidate bars before MTF: a direction and score >= `score_threshold`."""
        mask = (entry.direction != 0) & (entry.score >= self.score_threshold)
        return np.asarray(mask, dtype=np.bool_)

    def vote(self, frame: Frame) -> NDArray[np.int8]:
        """MTF vote per bar of one timeframe (default: tasks.engine.mtf.vote, EMA/RSI trend).

        `frame` holds that timeframe's OHLCV and feature columns; reading only
        `tasks.engine.features.VOTE_COLUMNS` keeps the other timeframes cheap.
        """
        return trend_vote(
            np.asarray(frame["ema_12"], dtype=np.float64),
            np.asarray(frame["ema_26"], dtype=np.float64),
            np.asarray(frame["ema_slope"], dtype=np.float64),
            np.asarray(frame["rsi_14"], dtype=np.float64),
        )

    @abstractmethod
    def exits(
        self, entry_price: FloatArray, side: NDArray[np.int64], frame: Frame
    ) -> tuple[FloatArray, FloatArray]:
        """(take_profit, stop_loss) per candidate; `frame` holds the candidates' rows."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


def atr_exits(
    entry_price: FloatArray, side: NDArray[np.int64], atr: FloatArray, tp: float, sl: float
) -> tuple[FloatArray, FloatArray]:
    """TP/SL at `tp` / `sl` ATRs from the entry (mirrored for short, side = -1)."""
    return entry_price + side * tp * atr, entry_price - side * sl * atr


def percent_exits(
    entry_price: FloatArray, side: NDArray[np.int64], tp_pct: float, sl_pct: float
) -> tuple[FloatArray, FloatArray]:
    """TP/SL at `tp_pct` / `sl_pct` percent of the entry price."""
    return (
        entry_price * (1.0 + side * tp_pct / 100.0),
        entry_price * (1.0 - side * sl_pct / 100.0),
    )


def risk_reward_exits(
    entry_price: FloatArray, side: NDArray[np.int64], stop_distance: FloatArray, reward: float
) -> tuple[FloatArray, FloatArray]:
    """Stop `stop_distance` (price units) away, target `reward` times that distance."""
    return entry_price + side * reward * stop_distance, entry_price - side * stop_distance


def rolling_extreme(
    values: FloatArray,
    period: int,
    pick: Callable[[FloatArray, FloatArray], FloatArray],
    *,
    shift: int = 0,
) -> FloatArray:
    """Trailing `period`-bar max/min (`pick` = np.fmax / np.fmin) along the last axis,
    ending `shift` bars before each bar (shift=1: the channel of the previous bars).
    NaN until `period + shift - 1` bars exist; reads bars <= i only."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    out = np.full(x.shape, np.nan)
    start = period - 1 + shift
    if n <= start:
        return out
    acc = x[..., start - shift - (period - 1) : n - shift].copy()
    width = acc.shape[-1] - (period - 1)
    result = acc[..., :width].copy()
    for j in range(1, period):
        result = pick(result, acc[..., j : j + width])
    out[..., start:] = result
    return out
