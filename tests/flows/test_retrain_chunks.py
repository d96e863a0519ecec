"""Retrain labelling: in-process chunks and Dask (LocalCluster, 2 workers) agree exactly."""

from __future__ import annotations

import pandas as pd
from prefect import flow

from tests.utils.market import store_market

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def test_dask_labelling_equals_in_process_labelling(db, prefect_harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from signalengine.core.config import get_settings
    from signalengine.flows.chunk_runner import dask_runner
    from signalengine.flows.retrain import label_history

    store_market(db, SYMBOLS, "2025-05-01", 5)
    monkeypatch.setenv("SIGNALENGINE_SIGNAL_SCORE_THRESHOLD", "0.35")
    monkeypatch.setenv("SIGNALENGINE_MTF_MIN_ALIGNED", "1")
    monkeypatch.setenv("SIGNALENGINE_BACKTEST_CHUNK_SYMBOLS", "1")
    settings = get_settings()

    @flow
    def label(distributed: bool) -> pd.DataFrame:
        return label_history(SYMBOLS, 4, settings, distributed=distributed)

    here = label(False)
    on_dask = label.with_options(task_runner=dask_runner(settings, 2))(True)
    assert len(here) > 20 and set(here["symbol"]) == set(SYMBOLS)
    pd.testing.assert_frame_equal(here, on_dask, check_exact=True)
