"""A bad SIGNALENGINE_STRATEGIES stops `backtest` and `stream` in one line, exit 2."""

from __future__ import annotations

import pytest

from tests.test_cli_edges import _cli, _one_line_error, env  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    ("command", "strategies", "fragment"),
    [
        (["backtest"], '[{"name": "nope"}]', "unknown strategy 'nope'"),
        (
            ["stream", "--source", "replay"],
            '[{"name": "f", "use": "default", "params": {"signal_score_threshold": 7}}]',
            "strategy 'f' params: signal_score_threshold: Input should be less than or equal",
        ),
    ],
)
def test_bad_strategies_are_one_line_errors(
    env: dict[str, str],  # noqa: F811
    command: list[str],
    strategies: str,
    fragment: str,
) -> None:
    result = _cli(command, env={**env, "SIGNALENGINE_STRATEGIES": strategies})
    _one_line_error(result, fragment)
