"""MTF votes: the rule, closed-bar alignment (merge_asof semantics) and agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd

from signalengine.tasks.engine.mtf import mtf_agreement, mtf_details, vote, votes_at

MIN = 60 * 10**9


def test_vote_rule() -> None:
    got = vote(
        np.array([2.0, 1.0, 2.0, 2.0, np.nan]),
        np.array([1.0, 2.0, 1.0, 1.0, 1.0]),
        np.array([0.1, -0.1, -0.1, 0.1, 0.1]),
        np.array([60.0, 40.0, 60.0, 45.0, 60.0]),
    )
    assert got.tolist() == [1, -1, 0, 0, 0]


def test_votes_at_uses_only_bars_closed_by_t() -> None:
    hour = 60 * MIN
    opens = np.array([0, 1, 2], dtype=np.int64) * hour
    votes = np.array([1, -1, 1], dtype=np.int8)
    at = np.array([55 * MIN, 60 * MIN, 115 * MIN, 120 * MIN, 10 * hour], dtype=np.int64)
    # The bar opening at 01:00 closes at 02:00: not usable at 01:55, usable at 02:00.
    assert votes_at(opens + hour, votes, at).tolist() == [0, 1, 1, -1, 1]


def test_votes_at_equals_merge_asof() -> None:
    rng = np.random.default_rng(0)
    close = np.sort(rng.choice(10_000, 300, replace=False)).astype(np.int64) * MIN
    votes = rng.integers(-1, 2, 300).astype(np.int8)
    at = np.sort(rng.integers(0, 10_100, 500)).astype(np.int64) * MIN
    left = pd.DataFrame({"t": pd.to_datetime(at, utc=True)})
    right = pd.DataFrame({"t": pd.to_datetime(close, utc=True), "vote": votes})
    merged = pd.merge_asof(left, right, on="t", direction="backward", allow_exact_matches=True)
    expected = merged["vote"].fillna(0).astype(int).to_numpy()
    assert votes_at(close, votes, at).tolist() == expected.tolist()


def test_agreement_and_details() -> None:
    direction = np.array([1, -1, 1, 0], dtype=np.int8)
    votes = np.array([[1, 1, 0, -1], [-1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=np.int8)
    aligned, score = mtf_agreement(direction, votes, min_aligned=2)
    assert aligned.tolist() == [True, False, True, False]
    assert score.tolist() == [0.5, 0.25, 1.0, 0.0]
    details = mtf_details(votes[0].tolist(), ["1m", "5m", "15m", "1h"])
    assert details == {"1m": "long", "5m": "long", "15m": "neutral", "1h": "short"}
