"""Symbol normalization: `BTCUSDT`, `btcusdt`, `BTC-USDT` and `BTC/USDT` all mean `BTC/USDT`."""

from __future__ import annotations

import re

# Longest first, so `BNBFDUSD` splits as BNB/FDUSD and not BNBFD/USD.
QUOTE_ASSETS: tuple[str, ...] = tuple(
    sorted(
        ("USDT", "USDC", "BUSD", "BTC", "ETH", "BNB", "EUR", "USD", "FDUSD"),
        key=len,
        reverse=True,
    )
)
_ASSET = re.compile(r"^[A-Z0-9]{1,20}$")
_SEPARATORS = ("/", "-", "_", ":")


def normalize_symbol(raw: str) -> str:
    """The ccxt unified symbol (`BASE/QUOTE`) for any accepted spelling.

    Raises ValueError when the text is not a symbol: a separated pair needs two
    alphanumeric assets; a joined pair must end in a known quote asset.
    """
    text = raw.strip().upper()
    for sep in _SEPARATORS:
        if sep in text:
            base, _, quote = text.partition(sep)
            if _ASSET.match(base) and _ASSET.match(quote):
                return f"{base}/{quote}"
            raise ValueError(f"not a trading pair: {raw!r}")
    if _ASSET.match(text):
        for quote in QUOTE_ASSETS:
            if text.endswith(quote) and len(text) > len(quote):
                return f"{text[: -len(quote)]}/{quote}"
    raise ValueError(f"not a trading pair: {raw!r}; write it like BTC/USDT or BTCUSDT")
