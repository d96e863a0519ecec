"""Symbol spelling: ccxt unified `BASE/QUOTE`, accepting `BTCUSDT`, `btc-usdt` and friends."""

from __future__ import annotations

import re

QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "BUSD", "BTC", "ETH", "BNB", "EUR", "USD")
_SEPARATED = re.compile(r"^([A-Z0-9]{2,15})[/\-_:]([A-Z0-9]{2,10})$")
_JOINED = re.compile(r"^[A-Z0-9]{4,25}$")


def normalize_symbol(value: str) -> str:
    """`BTCUSDT`, `btc-usdt`, `BTC_USDT` → `BTC/USDT`; ValueError when it cannot be read."""
    text = value.strip().upper()
    match = _SEPARATED.match(text)
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    if _JOINED.match(text):
        for quote in QUOTE_ASSETS:
            if text.endswith(quote) and len(text) > len(quote) + 1:
                return f"{text[: -len(quote)]}/{quote}"
    raise ValueError(f"cannot read symbol {value!r}; use BASE/QUOTE like BTC/USDT")
