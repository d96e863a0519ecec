"""Strategy parameter search: the search space, walk-forward folds and the out-of-sample score.

Pure logic (no Optuna, no MLflow, no Prefect): `tasks.learning.optimize_study` keeps the
Optuna study, `flows/optimize.py` runs one task per trial. What is searched:

- a space of `ParamRange`s over a strategy's pydantic `Params`: `--param KEY=LOW:HIGH`
  (`:STEP` for a grid, `:log` for a log scale), `KEY=a,b,c` (choices) or `KEY=VALUE`
  (fixed; a JSON list or object is one value: `events=["ema_cross"]`); without
  `--param`, every field the class declares tunable (both `ge` and `le` bounds, or
  `json_schema_extra={"search": {"low":..., "high":..., "step"|"log":...}}`);
- walk-forward folds: [start, end) cut into `folds + 1` equal segments, aligned to the
  primary timeframe; fold k reads segment k-1 as its warm-up (history the indicators
  need, never scored) and is scored on segment k only (its out-of-sample test window);
- the score of a parameter set: the mean over folds of the per-trade Sharpe (mean / std
  of `return_pct`, tasks.outcomes.stats) of the signals emitted in each test window and
  settled inside it (as of the window's end: nothing after it is read). A fold with
  fewer than `min_trades` settled trades, or an undefined Sharpe, makes the trial
  *pruned* (no score), not a penalised value that would distort the sampler's model.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import annotated_types
import numpy as np
import pandas as pd
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from signalengine.core.errors import ConfigurationError
from signalengine.core.vocabulary import TIMEFRAME_MINUTES
from signalengine.tasks.engine.buckets import index_ns, resample_bars
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import parse_specs, resolve_class
from signalengine.tasks.engine.pipeline import evaluate_symbol_history
from signalengine.tasks.engine.strategy import Strategy, StrategyParams
from signalengine.tasks.outcomes.settlement import PERFORMANCE_COLUMNS, settle_signals
from signalengine.tasks.outcomes.stats import trade_statistics

Kind = Literal["int", "float", "categorical", "fixed"]
SCORE_NAME = "mean_oos_sharpe"
RUN_ID = "optimize"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

__all__ = [
    "SCORE_NAME",
    "FoldBars",
    "FoldResult",
    "OptimizeJob",
    "OptimizeTarget",
    "ParamRange",
    "TrialScore",
    "WalkForwardFold",
    "build_strategy",
    "declared_space",
    "fold_bars",
    "parse_param",
    "parse_space",
    "resolve_target",
    "score_strategy",
    "spec_document",
    "walk_forward",
]


# -- the search space -------------------------------------------------------------------
@dataclass(frozen=True)
class ParamRange:
    """One searched (or fixed) parameter: a numeric range, a set of choices or one value."""

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        """The `--param` spelling of this range (logged to MLflow, shown in errors)."""
        if self.kind in ("categorical", "fixed"):
            return f"{self.name}={','.join(json.dumps(c) for c in self.choices)}"
        tail = ":log" if self.log else (f":{_num(self.step)}" if self.step else "")
        return f"{self.name}={_num(self.low)}:{_num(self.high)}{tail}"


def _num(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


def _base_type(annotation: Any) -> Any:
    """The field's type with `None` removed from an Optional/Union (int | None -> int)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _numeric_kind(info: FieldInfo) -> Kind | None:
    base = _base_type(info.annotation)
    if base is bool:
        return None
    if base is int:
        return "int"
    if base is float:
        return "float"
    return None


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    """Inclusive (ge, le) bounds of a field, None where it has none."""
    low = high = None
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = float(meta.ge)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Le):
            high = float(meta.le)  # type: ignore[arg-type]
    return low, high


def _choice(text: str) -> Any:
    """A choice or fixed value as JSON when it parses (numbers, true/false), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _check_value(params_cls: type[StrategyParams], name: str, value: Any) -> None:
    """Refuse a value the strategy's own validation refuses (bounds, choices, types)."""
    try:
        params_cls.model_validate({name: value})
    except ValidationError as e:
        mine = [err for err in e.errors() if err["loc"][:1] == (name,)]
        if mine:
            msg = mine[0]["msg"].removeprefix("Value error, ")
            raise ConfigurationError(f"--param {name}={json.dumps(value)}: {msg}") from e


def _number(text: str, kind: Kind, name: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as e:
        raise ConfigurationError(f"--param {name}: {what} {text!r} is not a number") from e
    if kind == "int" and not value.is_integer():
        raise ConfigurationError(f"--param {name}: {what} {text!r} must be an integer")
    return value


def _parse_range(name: str, spec: str, info: FieldInfo) -> ParamRange:
    """`LOW:HIGH[:STEP|log]` of a numeric field."""
    kind = _numeric_kind(info)
    if kind is None:
        raise ConfigurationError(
            f"--param {name}: not a numeric parameter, give choices (KEY=a,b) or a value"
        )
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ConfigurationError(f"--param {name}: expected LOW:HIGH[:STEP|log]")
    low = _number(parts[0], kind, name, "low")
    high = _number(parts[1], kind, name, "high")
    if low >= high:
        raise ConfigurationError(f"--param {name}: low {parts[0]} must be below high")
    step, log = None, False
    if len(parts) == 3 and parts[2] == "log":
        log = True
        if low <= 0:
            raise ConfigurationError(f"--param {name}: a log range needs low > 0")
    elif len(parts) == 3:
        step = _number(parts[2], kind, name, "step")
        if step <= 0 or step > high - low:
            raise ConfigurationError(f"--param {name}: step must be in (0, high - low]")
    return ParamRange(name, kind, low, high, step, log)


def parse_param(text: str, params_cls: type[StrategyParams]) -> ParamRange:
    """One `--param` flag, checked against the strategy's `Params` (one-line errors)."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    fields = params_cls.model_fields
    if not sep or not name or not spec:
        raise ConfigurationError(
            f"--param {text!r}: expected KEY=LOW:HIGH[:STEP|log], KEY=a,b,c or KEY=VALUE"
        )
    if name not in fields:
        raise ConfigurationError(
            f"--param {name}: unknown parameter (known: {', '.join(sorted(fields))})"
        )
    if ":" in spec and not spec.startswith(("[", "{")):
        found = _parse_range(name, spec, fields[name])
        for bound in (found.low, found.high):
            _check_value(params_cls, name, int(bound) if found.kind == "int" else bound)  # type: ignore[arg-type]
        return found
    if spec.startswith(("[", "{")):  # one JSON list/object value, fixed (events=[...])
        values: tuple[Any, ...] = (_choice(spec),)
    else:
        values = tuple(_choice(v.strip()) for v in spec.split(",") if v.strip())
    if not values:
        raise ConfigurationError(f"--param {name}: no value given")
    for value in values:
        _check_value(params_cls, name, value)
    if len(values) == 1:
        return ParamRange(name, "fixed", choices=values)
    if len(set(map(json.dumps, values))) != len(values):
        raise ConfigurationError(f"--param {name}: a choice is repeated")
    return ParamRange(name, "categorical", choices=values)


def declared_space(params_cls: type[StrategyParams]) -> list[ParamRange]:
    """The params a strategy declares tunable: `search` in json_schema_extra, or ge+le."""
    out = []
    for name, info in params_cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        search = extra.get("search")
        if isinstance(search, dict):
            if "choices" in search:
                choices = ",".join(json.dumps(c) for c in search["choices"])  # type: ignore[union-attr]
                out.append(parse_param(f"{name}={choices}", params_cls))
                continue
            tail = (
                ":log" if search.get("log") else (f":{search['step']}" if "step" in search else "")
            )
            out.append(parse_param(f"{name}={search['low']}:{search['high']}{tail}", params_cls))
            continue
        kind = _numeric_kind(info)
        low, high = _bounds(info)
        if kind is not None and low is not None and high is not None and low < high:
            out.append(ParamRange(name, kind, low, high))
    return out


def parse_space(flags: Sequence[str], params_cls: type[StrategyParams]) -> list[ParamRange]:
    """The `--param` flags, else the declared tunables; at least one searched param."""
    space = [parse_param(f, params_cls) for f in flags] if flags else declared_space(params_cls)
    names = [p.name for p in space]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"--param {repeated[0]}: given twice")
    if not any(p.kind != "fixed" for p in space):
        raise ConfigurationError(
            f"nothing to search: {params_cls.__name__} declares no bounded parameter;"
            " give --param KEY=LOW:HIGH"
        )
    return space


# -- which strategy ---------------------------------------------------------------------
@dataclass(frozen=True)
class OptimizeTarget:
    """The strategy being tuned, as the loader names it: `name`, class `use`, base params.

    Base params: those of NAME's entry in SIGNALENGINE_STRATEGIES (when NAME is one), under
    the searched ones. Picklable (the class is re-resolved from `use` where it runs).
    """

    name: str
    use: str
    base: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type[Strategy]:
        return resolve_class(self.use)


def resolve_target(name: str, configured: str | None) -> OptimizeTarget:
    """NAME as an instance of SIGNALENGINE_STRATEGIES, else as a class the loader resolves."""
    for spec in parse_specs(configured) if configured else []:
        if spec.name == name:
            target = OptimizeTarget(spec.name, spec.use or spec.name, dict(spec.params))
            target.cls  # noqa: B018  (resolves now: an unknown class is a one-line error)
            return target
    cls = resolve_class(name)
    out_name = name if _NAME_PATTERN.match(name) else cls.__name__.lower()
    return OptimizeTarget(out_name, name)


def build_strategy(
    target: OptimizeTarget, params: Mapping[str, Any], config: EngineConfig
) -> Strategy:
    """The target's strategy with `params` over its base params, bound to `config`."""
    cls = target.cls
    merged = cls.Params.model_validate({**target.base, **params})
    return cls(merged, name=target.name, config=config)


def spec_document(target: OptimizeTarget, params: Mapping[str, Any]) -> dict[str, Any]:
    """The loader's spec (SIGNALENGINE_STRATEGIES entry) of the target with `params`."""
    return {"name": target.name, "use": target.use, "params": {**target.base, **params}}


# -- walk-forward folds -----------------------------------------------------------------
@dataclass(frozen=True)
class WalkForwardFold:
    """Fold `index`: warm-up [warmup_start, test_start), scored on [test_start, test_end)."""

    index: int
    warmup_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, pd.Timestamp) else v) for k, v in asdict(self).items()}


def walk_forward(
    start: pd.Timestamp, end: pd.Timestamp, folds: int, *, primary_timeframe: str
) -> list[WalkForwardFold]:
    """`folds` consecutive test windows over [start, end), each after one warm-up segment."""
    if folds < 1:
        raise ConfigurationError("--folds must be at least 1")
    if start >= end:
        raise ConfigurationError(f"start {start} must be before end {end}")
    bar = pd.Timedelta(minutes=TIMEFRAME_MINUTES[primary_timeframe])
    segment = (end - start) / (folds + 1)
    if segment < 12 * bar:
        raise ConfigurationError(
            f"[{start}, {end}) is too short for {folds} folds: each segment needs at least"
            f" 12 {primary_timeframe} bars"
        )
    edges = [start + i * segment for i in range(folds + 2)]
    # Test windows start on a primary bar boundary (a bucket is never split by a fold).
    cut = [start, *(e.floor(bar) for e in edges[1:-1]), end]
    return [WalkForwardFold(k, cut[k], cut[k + 1], cut[k + 2]) for k in range(folds)]


# -- bars of the folds ------------------------------------------------------------------
@dataclass(frozen=True)
class FoldBars:
    """Per fold, per symbol: every timeframe's bars over the fold's warm-up + test window.

    Built once per process and reused by every trial (the bars do not depend on params).
    """

    folds: tuple[WalkForwardFold, ...]
    bars: tuple[dict[str, dict[str, pd.DataFrame]], ...]  # fold -> symbol -> tf -> frame

    @property
    def bars_1m(self) -> int:
        return sum(len(tfs["1m"]) for fold in self.bars for tfs in fold.values())


def _slice(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    ts = index_ns(frame)
    lo, hi = np.searchsorted(ts, [start.value, end.value])
    return frame.iloc[int(lo) : int(hi)]


def fold_bars(
    bars_1m_by_symbol: Mapping[str, pd.DataFrame],
    folds: Sequence[WalkForwardFold],
    config: EngineConfig,
) -> FoldBars:
    """Slice each symbol's 1m bars per fold and bucket its higher timeframes once."""
    out: list[dict[str, dict[str, pd.DataFrame]]] = []
    for fold in folds:
        per_symbol: dict[str, dict[str, pd.DataFrame]] = {}
        for symbol, bars in bars_1m_by_symbol.items():
            part = _slice(bars, fold.warmup_start, fold.test_end)
            if part.empty:
                continue
            tfs = {tf: resample_bars(part, tf) for tf in config.timeframes if tf != "1m"}
            per_symbol[symbol] = {"1m": part, **tfs}
        out.append(per_symbol)
    return FoldBars(tuple(folds), tuple(out))


# -- the score --------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldResult:
    """Out-of-sample figures of one fold's test window."""

    index: int
    signals: int
    trades: int
    sharpe: float | None
    avg_return_pct: float | None
    total_return_pct: float | None
    win_rate: float | None


@dataclass(frozen=True)
class TrialScore:
    """A parameter set's walk-forward result: `score` (None when pruned, with `pruned`)."""

    folds: tuple[FoldResult, ...]
    score: float | None
    pruned: str | None

    def metrics(self) -> dict[str, float]:
        """Per-fold figures as flat MLflow metric names (fold0_sharpe, ...), finite only."""
        out: dict[str, float] = {}
        for f in self.folds:
            for key in ("signals", "trades", "sharpe", "avg_return_pct", "total_return_pct"):
                value = getattr(f, key)
                if value is not None and np.isfinite(value):
                    out[f"fold{f.index}_{key}"] = float(value)
        if self.score is not None:
            out[SCORE_NAME] = self.score
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "pruned": self.pruned,
            "folds": [asdict(f) for f in self.folds],
        }


def _fold_result(
    strategy: Strategy,
    fold: WalkForwardFold,
    bars: Mapping[str, Mapping[str, pd.DataFrame]],
    exchange: str,
) -> FoldResult:
    cfg = strategy.config
    perf_frames = []
    emitted = 0
    for symbol, tfs in bars.items():
        signals = evaluate_symbol_history(
            tfs,
            symbol=symbol,
            exchange=exchange,
            run_id=RUN_ID,
            config=cfg,
            strategies=[strategy],
        )
        if signals.empty:
            continue
        ts = pd.DatetimeIndex(pd.to_datetime(signals["ts"], utc=True))
        tested = signals[(ts >= fold.test_start) & (ts < fold.test_end)]
        if tested.empty:
            continue
        emitted += len(tested)
        perf = settle_signals(
            tested.reset_index(drop=True),
            tfs["1m"],
            fee_bps=cfg.fee_bps,
            slippage_bps=cfg.slippage_bps,
        )
        if not perf.empty:
            perf_frames.append(perf)
    performance = (
        pd.concat(perf_frames, ignore_index=True)
        if perf_frames
        else pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    )
    stats = trade_statistics(performance)
    return FoldResult(
        index=fold.index,
        signals=emitted,
        trades=stats["count"],
        sharpe=stats["sharpe"],
        avg_return_pct=stats["avg_return_pct"],
        total_return_pct=stats["total_return_pct"],
        win_rate=stats["win_rate"],
    )


def score_strategy(
    strategy: Strategy, bars: FoldBars, *, exchange: str, min_trades: int
) -> TrialScore:
    """Walk-forward out-of-sample score of one strategy instance (see module docstring)."""
    results = tuple(
        _fold_result(strategy, fold, fold_data, exchange)
        for fold, fold_data in zip(bars.folds, bars.bars, strict=True)
    )
    for r in results:
        if r.trades < min_trades:
            return TrialScore(results, None, f"fold {r.index}: {r.trades} trades < {min_trades}")
        if r.sharpe is None:
            return TrialScore(results, None, f"fold {r.index}: Sharpe undefined")
    sharpes = [r.sharpe for r in results if r.sharpe is not None]
    return TrialScore(results, float(np.mean(sharpes)), None)


# -- one optimize request ---------------------------------------------------------------
@dataclass(frozen=True)
class OptimizeJob:
    """Everything a trial needs besides its params (picklable: it travels to Dask)."""

    target: OptimizeTarget
    space: tuple[ParamRange, ...]
    config: EngineConfig
    exchange: str
    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    folds: int
    min_trades: int

    @property
    def windows(self) -> list[WalkForwardFold]:
        return walk_forward(
            self.start, self.end, self.folds, primary_timeframe=self.config.primary_timeframe
        )

    @property
    def fixed(self) -> dict[str, Any]:
        """The `KEY=VALUE` params: part of every trial's set, not searched."""
        return {p.name: p.choices[0] for p in self.space if p.kind == "fixed"}

    def request(self) -> dict[str, Any]:
        """What the study searches: the same request from any process finds the same study."""
        return {
            "strategy": self.target.name,
            "use": self.target.use,
            "base": dict(self.target.base),
            "space": [p.describe() for p in self.space],
            "exchange": self.exchange,
            "symbols": list(self.symbols),
            "start": str(self.start),
            "end": str(self.end),
            "folds": self.folds,
            "min_trades": self.min_trades,
            "score": SCORE_NAME,
            "config": asdict(self.config),
        }

    def trial_params(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's full set: the fixed params and the sampled ones."""
        return {**self.fixed, **sampled}
