"""The public names of the `api` package."""

from __future__ import annotations

from signalengine import api


def test_public_names() -> None:
    assert api.__all__ == ["create_app", "serve"]
    assert all(callable(getattr(api, name)) for name in api.__all__)
