"""Each package states its job and exports exactly names it has (STYLE 4)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import signalengine

PACKAGES = sorted(
    m.name for m in pkgutil.walk_packages(signalengine.__path__, "signalengine.") if m.ispkg
)


def test_the_layout_has_the_concern_packages() -> None:
    expected = {"marketdata", "engine", "outcomes", "runs", "learning", "alerts"}
    assert {f"signalengine.tasks.{name}" for name in expected} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_package_docstring_and_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip(), f"{name} says nothing about its job"
    exported = getattr(module, "__all__", [])
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    assert len(exported) == len(set(exported))
