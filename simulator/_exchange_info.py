"""`GET /api/v3/exchangeInfo` in Binance's spot shape, for the simulated symbols."""

from __future__ import annotations

from typing import Any

from signalengine.simulator.config import market_id, unified_symbol
from signalengine.simulator.market import symbol_profile

_ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


def _num(value: float) -> str:
    return f"{value:.8f}"


def _filters(symbol: str) -> list[dict[str, Any]]:
    profile = symbol_profile(symbol)
    tick, step = profile.tick_size, profile.step_size
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": _num(tick),
            "maxPrice": _num(1_000_000.0),
            "tickSize": _num(tick),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": _num(step),
            "maxQty": _num(9_000_000.0),
            "stepSize": _num(step),
        },
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": _num(0.0),
            "maxQty": _num(100_000.0),
            "stepSize": _num(0.0),
        },
        {
            "filterType": "TRAILING_DELTA",
            "minTrailingAboveDelta": 10,
            "maxTrailingAboveDelta": 2000,
            "minTrailingBelowDelta": 10,
            "maxTrailingBelowDelta": 2000,
        },
        {
            "filterType": "PERCENT_PRICE_BY_SIDE",
            "bidMultiplierUp": "5",
            "bidMultiplierDown": "0.2",
            "askMultiplierUp": "5",
            "askMultiplierDown": "0.2",
            "avgPriceMins": 5,
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": _num(5.0),
            "applyMinToMarket": True,
            "maxNotional": _num(9_000_000.0),
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]


def _symbol_entry(symbol: str) -> dict[str, Any]:
    base, quote = unified_symbol(symbol).split("/")
    return {
        "symbol": market_id(symbol),
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": _ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "pegInstructionsAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": _filters(symbol),
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(symbols: list[str], *, server_time_ms: int) -> dict[str, Any]:
    """The exchangeInfo body for `symbols` (unified), with the sim time as serverTime."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": _RATE_LIMITS,
        "exchangeFilters": [],
        "symbols": [_symbol_entry(s) for s in symbols],
    }
