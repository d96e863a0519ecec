"""Built-in strategies (tasks.engine.strategy.Strategy subclasses), by loader name."""

from signalengine.tasks.engine.strategies.default import DefaultParams, DefaultStrategy
from signalengine.tasks.engine.strategy import DEFAULT_STRATEGY, Strategy

BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {DEFAULT_STRATEGY: DefaultStrategy}

__all__ = ["BUILTIN_STRATEGIES", "DefaultParams", "DefaultStrategy"]
