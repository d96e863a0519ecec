"""Backoff delays shared by every reconnecting or retrying loop."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential delay for the n-th retry (0-based), capped, with ±50 % jitter so that
    many clients that lost the same server do not come back in step."""
    return float(min(cap, base * 2**attempt) * random.uniform(0.5, 1.5))
