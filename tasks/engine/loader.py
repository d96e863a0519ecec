"""Loading strategies from SIGNALENGINE_STRATEGIES: built-in names, import paths, entry points.

The setting is a JSON list (or the path of a .json / .toml file holding one, TOML as
`[[strategies]]` tables) of specs::

    [{"name": "default"},
     {"name": "fast", "use": "default", "params": {"signal_score_threshold": 0.3}},
     {"name": "donchian", "use": "examples.strategies.donchian:Donchian",
      "params": {"period": 20}}]

`name` names the instance (recorded on every signal); `use` says which class, defaulting
to `name`: a built-in (tasks.engine.strategies.BUILTIN_STRATEGIES), `package.module:Class`,
or an entry point of the `signalengine.strategies` group. `params` is validated by the
class's pydantic `Params`. Every problem is one ConfigurationError line (the CLI exits 2).
Unset or empty means `[{"name": "default"}]`.
"""

from __future__ import annotations

import importlib
import json
import tomllib
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signalengine.core.errors import ConfigurationError
from signalengine.core.vocabulary import STRATEGY_NAME_PATTERN
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.strategies import BUILTIN_STRATEGIES
from signalengine.tasks.engine.strategy import DEFAULT_STRATEGY, Strategy

ENTRY_POINT_GROUP = "signalengine.strategies"

__all__ = [
    "ENTRY_POINT_GROUP",
    "StrategySpec",
    "default_strategies",
    "load_strategies",
    "parse_specs",
    "resolve_class",
]


class StrategySpec(BaseModel):
    """One entry of SIGNALENGINE_STRATEGIES."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=STRATEGY_NAME_PATTERN)
    use: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


def _one_line(error: ValidationError, prefix: str) -> str:
    """A pydantic error as one line: `prefix: loc: message; loc: message`."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "value"
        parts.append(f"{loc}: {item['msg']}")
    return f"{prefix}: {'; '.join(parts)}"


def _read_source(raw: str) -> Any:
    """The JSON list itself, or what the .json / .toml file it names holds."""
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigurationError(f"SIGNALENGINE_STRATEGIES is not valid JSON: {e}") from e
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"SIGNALENGINE_STRATEGIES: neither a JSON list nor an existing file: {text!r}"
        )
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text()).get("strategies", [])
        return json.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigurationError(f"strategies file {path}: {e}") from e


def parse_specs(raw: str | Sequence[Any] | None) -> list[StrategySpec]:
    """Validated specs of the setting (str, or an already decoded list); unset: default."""
    data = _read_source(raw) if isinstance(raw, str) and raw.strip() else raw
    if not data:
        return [StrategySpec(name=DEFAULT_STRATEGY)]
    if isinstance(data, dict):  # a single spec, or a {"strategies": [...]} document
        data = data.get("strategies", [data])
    if not isinstance(data, list):
        raise ConfigurationError("SIGNALENGINE_STRATEGIES must be a list of strategy specs")
    specs = []
    for k, item in enumerate(data):
        try:
            specs.append(StrategySpec.model_validate(item))
        except ValidationError as e:
            raise ConfigurationError(_one_line(e, f"strategy #{k + 1}")) from e
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(f"strategy names must be unique: {', '.join(dupes)} repeated")
    return specs


def _import_path(path: str) -> object:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"cannot import strategy module {module_name!r}: {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ConfigurationError(f"module {module_name!r} has no {attr!r}") from e


def resolve_class(use: str) -> type[Strategy]:
    """The Strategy subclass a `use` names (built-in, `module:Class` or entry point)."""
    if use in BUILTIN_STRATEGIES:
        found: object = BUILTIN_STRATEGIES[use]
    elif ":" in use:
        found = _import_path(use)
    else:
        points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        if use not in points:
            known = sorted({*BUILTIN_STRATEGIES, *points})
            raise ConfigurationError(
                f"unknown strategy {use!r} (known: {', '.join(known)}; or package.module:Class)"
            )
        try:
            found = points[use].load()
        except Exception as e:  # a broken plugin: say which one, without a traceback
            raise ConfigurationError(f"entry point {use!r} failed to load: {e}") from e
    if not (isinstance(found, type) and issubclass(found, Strategy)):
        raise ConfigurationError(f"{use!r} is not a Strategy subclass")
    return found


def _build(spec: StrategySpec, config: EngineConfig) -> Strategy:
    cls = resolve_class(spec.use or spec.name)
    try:
        params = cls.Params.model_validate(spec.params)
    except ValidationError as e:
        raise ConfigurationError(_one_line(e, f"strategy {spec.name!r} params")) from e
    try:
        strategy = cls(params, name=spec.name, config=config)
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"strategy {spec.name!r}: {e}") from e
    extra = sorted(set(strategy.timeframes) - set(config.timeframes))
    if extra:
        raise ConfigurationError(
            f"strategy {spec.name!r} reads timeframes {extra} the engine does not build"
            f" (SIGNALENGINE_TIMEFRAMES: {', '.join(config.timeframes)})"
        )
    if strategy.primary_timeframe != config.primary_timeframe:
        raise ConfigurationError(
            f"strategy {spec.name!r} triggers on {strategy.primary_timeframe}, the engine on"
            f" {config.primary_timeframe} (SIGNALENGINE_PRIMARY_TIMEFRAME)"
        )
    return strategy


def load_strategies(raw: str | Sequence[Any] | None, config: EngineConfig) -> list[Strategy]:
    """Strategy instances of a SIGNALENGINE_STRATEGIES value, bound to `config`."""
    return [_build(spec, config) for spec in parse_specs(raw)]


def default_strategies(config: EngineConfig) -> list[Strategy]:
    """`[default]`: what the engine runs when no strategies are given."""
    return load_strategies(None, config)
