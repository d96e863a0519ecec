"""Symbol spelling, the one parser: `BTCUSDT`, `btc-usdt` and `BTC/USDT` all mean `BTC/USDT`.

SYMBOL_PATTERN is exactly the set of accepted spellings; the OpenAPI schema publishes it,
so a client (or a fuzzer) can tell a valid symbol from the schema alone.
"""

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
ASSET_MAX_LENGTH = 20


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


_ASSET = f"[A-Za-z0-9]{{1,{ASSET_MAX_LENGTH}}}"
_SEPARATED = f"{_ASSET}[-/_:]{_ASSET}"
_JOINED = f"{_ASSET}(?:{'|'.join(_any_case(q) for q in QUOTE_ASSETS)})"
SYMBOL_PATTERN = f"^(?:{_SEPARATED}|{_JOINED})$"
_SYMBOL = re.compile(f"(?:{_SEPARATED}|{_JOINED})")
_SPLIT = re.compile(r"[-/_:]")


def normalize_symbol(raw: str) -> str:
    """The ccxt unified symbol (`BASE/QUOTE`) for any accepted spelling.

    Accepted: two alphanumeric assets joined by `/`, `-`, `_` or `:`, or run together
    when the second is a known quote asset (QUOTE_ASSETS); any letter case. Raises
    ValueError otherwise.
    """
    if not _SYMBOL.fullmatch(raw):
        raise ValueError(f"not a trading pair: {raw!r}; write it like BTC/USDT or BTCUSDT")
    text = raw.upper()
    parts = _SPLIT.split(text)
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    for quote in QUOTE_ASSETS:
        base_length = len(text) - len(quote)
        if text.endswith(quote) and 1 <= base_length <= ASSET_MAX_LENGTH:
            return f"{text[:base_length]}/{quote}"
    raise AssertionError("unreachable: SYMBOL_PATTERN guarantees a known quote suffix")
