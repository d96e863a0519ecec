"""Real exchange klines for cross-checks: a folder outside the repository, never copied in.

`SIGNALENGINE_REAL_DATA` names the folder (default: `../shared/data/real` beside the
repository). Without it the real-data tests skip and say where they looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
REAL_DATA = Path(
    os.environ.get("SIGNALENGINE_REAL_DATA", _ROOT.parent / "shared" / "data" / "real")
)


def real_files(pattern: str) -> list[Path]:
    """The real-data files matching `pattern`; skips the test (saying why) when none exist."""
    found = sorted(REAL_DATA.glob(pattern)) if REAL_DATA.is_dir() else []
    if not found:
        pytest.skip(
            f"no real market data matching {pattern!r} in {REAL_DATA}"
            " (set SIGNALENGINE_REAL_DATA to the folder of real klines)"
        )
    return found
