from __future__ import annotations

import pytest

from signalengine.core.symbols import normalize_symbol


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BTCUSDT", "BTC/USDT"),
        ("btcusdt", "BTC/USDT"),
        ("BTC-USDT", "BTC/USDT"),
        ("BTC/USDT", "BTC/USDT"),
        ("eth:btc", "ETH/BTC"),
        ("BtcUsdt", "BTC/USDT"),
        ("BUSD", "B/USD"),
        ("ETHBTC", "ETH/BTC"),
        ("BNBFDUSD", "BNB/FDUSD"),
        ("SOLUSDC", "SOL/USDC"),
        ("XRPEUR", "XRP/EUR"),
        ("btc_usdt", "BTC/USDT"),
        ("AUSDT", "A/USDT"),
        ("T/USDT", "T/USDT"),
        ("1000SATS-USDT", "1000SATS/USDT"),
    ],
)
def test_spellings_of_a_pair_normalize_to_the_unified_symbol(raw: str, expected: str) -> None:
    assert normalize_symbol(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "USDT",
        "BTCXYZ",
        "BTC/",
        "/USDT",
        "BTC/US DT",
        "BTC\x00USDT",
        " BTCUSDT",
        "A-B-C",
        "BTCUSDT\n",
    ],
)
def test_text_that_is_not_a_pair_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not a trading pair"):
        normalize_symbol(raw)
