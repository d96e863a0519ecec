"""The backtest's HTML report with PNG charts (matplotlib, Agg backend; no network, no JS).

Charts: the equity curve (compounded by exit time), and per symbol a close-price chart
with long/short markers at emission. Tables: the summary and per-symbol figures.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from signalengine.tasks.outcomes.stats import MIN_FACTOR, exit_order, trade_statistics  # noqa: E402

MAX_PRICE_CHARTS = 6


def equity_curve(performance: pd.DataFrame) -> pd.Series:
    """Equity (start 1.0) compounded trade by trade, indexed by exit time."""
    ordered = exit_order(performance)
    factors = 1.0 + ordered["return_pct"].to_numpy(dtype=float) / 100.0
    values = np.cumprod(np.maximum(factors, MIN_FACTOR))
    return pd.Series(values, index=pd.to_datetime(ordered["exit_time"], utc=True))


def per_symbol_table(performance: pd.DataFrame) -> pd.DataFrame:
    """One row of rollup figures per symbol."""
    rows = [
        {"symbol": symbol, **trade_statistics(trades)}
        for symbol, trades in performance.groupby("symbol", sort=True)
    ]
    return pd.DataFrame(rows)


def _plot_equity(performance: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 3.5))
    if not performance.empty:
        curve = equity_curve(performance)
        ax.plot(curve.index, curve.to_numpy(), color="#1f77b4", linewidth=1.2)
    ax.axhline(1.0, color="#999", linewidth=0.8, linestyle="--")
    ax.set_title("Equity (compounded per trade, by exit time)")
    ax.set_ylabel("equity")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_price(symbol: str, bars: pd.DataFrame, signals: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 3.5))
    hourly = bars["close"].resample("1h").last().dropna() if len(bars) > 5000 else bars["close"]
    ax.plot(hourly.index, hourly.to_numpy(), color="#444", linewidth=0.8)
    for direction, marker, color in (("long", "^", "#2ca02c"), ("short", "v", "#d62728")):
        part = signals[signals["direction"] == direction]
        ax.scatter(
            pd.to_datetime(part["emitted_at"], utc=True),
            part["entry_price"],
            marker=marker,
            color=color,
            s=28,
            label=direction,
            zorder=3,
        )
    ax.set_title(f"{symbol}: close with signals")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, classes="t"
    )


def write_report(
    out_dir: Path,
    *,
    summary: dict[str, Any],
    signals: pd.DataFrame,
    performance: pd.DataFrame,
    bars_1m: dict[str, pd.DataFrame],
) -> Path:
    """Write `report.html` and its PNG charts into `out_dir`; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_equity(performance, out_dir / "equity.png")
    charts = []
    for symbol in list(bars_1m)[:MAX_PRICE_CHARTS]:
        name = f"price_{symbol.replace('/', '-')}.png"
        _plot_price(symbol, bars_1m[symbol], signals[signals["symbol"] == symbol], out_dir / name)
        charts.append((symbol, name))
    facts = pd.DataFrame([{"figure": k, "value": v} for k, v in summary.items()])
    table = per_symbol_table(performance) if not performance.empty else pd.DataFrame()
    price_html = "".join(
        f'<h3>{html.escape(s)}</h3><img src="{n}" alt="{html.escape(s)} price">' for s, n in charts
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SignalEngine backtest {html.escape(str(summary.get("run_id", "")))}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:1100px}}
img{{max-width:100%}}table.t{{border-collapse:collapse}}
table.t td,table.t th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}</style>
</head><body><h1>Backtest report</h1>
<h2>Summary</h2>{_table(facts)}
<h2>Equity curve</h2><img src="equity.png" alt="equity curve">
<h2>Per symbol</h2>{_table(table) if not table.empty else "<p>No settled signals.</p>"}
<h2>Prices and signals</h2>{price_html}
</body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
