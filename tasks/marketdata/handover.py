"""A complete live minute goes to evaluation while it is still being stored.

Storing a minute of hundreds of symbols (the 1m rows and every timeframe relation's
upkeep) takes longer than evaluating it from the in-memory windows, and a signal's
latency is the sum of both when they run one after the other. When a minute is
complete (every symbol's bar is there, valid, right after its watermark: nothing to fill
over REST, nothing rejected), what will be stored is known before the write, so the
stream hands it over first and stores it meanwhile. `MinuteCommit` tells evaluation
when the write has committed: it waits for that before reading bars from the database
and before writing signals, so a signal never lands ahead of its bars. Any other minute
is stored first and handed over afterwards, as it was stored.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from signalengine.tasks.marketdata.batching import MINUTE_MS, MinuteBars, frame_from_raw_klines
from signalengine.tasks.marketdata.ingest import Watermarks
from signalengine.tasks.marketdata.validation import validate_klines

__all__ = ["MinuteCommit", "complete_minute"]

MS = 1_000_000  # ns per ms


class MinuteCommit:
    """Resolved once a handed-over minute's bars are committed, or their storing failed."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._error: BaseException | None = None

    def done(self) -> None:
        self._event.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._event.set()

    def wait(self) -> None:
        """Block until resolved; raises when the bars were not stored."""
        self._event.wait()
        if self._error is not None:
            raise RuntimeError("the minute's bars were not stored") from self._error


def complete_minute(bars: MinuteBars, marks: Watermarks, minute_ms: int) -> pd.DataFrame | None:
    """The minute's validated 1m bars when it is complete for every symbol of `marks`;
    None when any is missing, malformed, out of place or follows a gap."""
    symbols = list(marks.by_symbol)
    if len(bars) != len(symbols) or any(len(raws) != 1 for raws in bars.values()):
        return None
    previous = minute_ms - MINUTE_MS
    if any(marks.by_symbol.get(s) != previous for s in bars):
        return None
    batch = validate_klines(frame_from_raw_klines(marks.exchange, bars), known_symbols=symbols)
    valid = batch.valid
    if batch.rejected or len(valid) != len(symbols):
        return None
    opens = pd.DatetimeIndex(valid["ts"]).as_unit("ns").asi8
    if not bool(np.all(opens == minute_ms * MS)):
        return None
    return valid
