"""Which symbols an exchange lists: checked before a job asks for their history.

A symbol the exchange does not list fails every request with ccxt `BadSymbol`; asking
once up front turns that into one clear error instead of a retried failure per page.
"""

from __future__ import annotations

from signalengine.tasks.marketdata.exchange import create_exchange

__all__ = ["unlisted_symbols"]


async def unlisted_symbols(symbols: list[str], *, exchange: str, base_url: str | None) -> list[str]:
    """The `symbols` (ccxt unified) that `exchange` has no market for, in their order."""
    client = create_exchange(exchange, base_url=base_url)
    try:
        markets = await client.load_markets()
    finally:
        await client.close()
    return [s for s in symbols if s not in markets]
