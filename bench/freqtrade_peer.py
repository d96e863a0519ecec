"""freqtrade's backtester on the engine benchmark's data: the peer figure for bench/engine.py.

freqtrade pins many dependencies, so it never enters the project's venv: `ensure_venv`
builds `bench/.venv-freqtrade` once (`pip install` of FREQTRADE_REQUIREMENTS, gitignored)
and every later run reuses it.

One run (`run_peer`): the same seeded synthetic 1m candles as the engine benchmark
(`tests.utils.bars.make_bars_1m`, one symbol, BTC/USDT), plus their 5m buckets
(`tasks.resample.resample_bars`), are stored with freqtrade's own feather data handler in
a temporary `user_data`; then `freqtrade backtesting` runs `PeerStrategy` with timeframe
5m and `--timeframe-detail 1m` (entries on 5m closes, exits walked on 1m candles, as our
engine's 5m signals settle on 1m bars).

Offline: freqtrade's exchange object loads the exchange's markets through ccxt even in
backtesting. Every ccxt Binance URL is pointed (`ccxt_config` / `ccxt_async_config`
`urls` overrides) at the project's Binance simulator (`simulator.running_simulator`,
127.0.0.1), which serves `exchangeInfo`; so the real ccxt and freqtrade code run. The
freqtrade process refuses any socket to a non-loopback address, and, where `unshare` is
allowed (root), simulator and freqtrade run in a fresh network namespace that has only
the loopback interface.

Strategy (`PeerStrategy`, long only; spot freqtrade cannot short): enter long on the 5m
close where EMA12 crosses above EMA26 with RSI14 > 50; take profit via `minimal_roi` at
`tp_pct`, stop loss via `stoploss` at `-sl_pct`, both fixed percentages set to 2x / 1x
the median 5m ATR14 of the data (our engine: 2x / 1x the ATR of each signal bar); a
trade still open after 60 minutes exits (`minimal_roi` {"60": -1}, our expiry of 12 5m
bars); one trade at a time; fee 0.05 % per side (our 10 bps per trade). Our pipeline
does much more per bar (20 features, 6 event detectors, 4-timeframe MTF votes, long and
short, overlapping signals), so the comparison flatters freqtrade, if anything.

Run: `.venv/bin/python bench/freqtrade_peer.py [--days 365]` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator import running_simulator  # noqa: E402
from tasks.features import feature_arrays  # noqa: E402
from tasks.resample import index_ns, resample_bars  # noqa: E402
from tests.utils.bars import make_bars_1m  # noqa: E402

VENV = ROOT / "bench" / ".venv-freqtrade"
FREQTRADE_REQUIREMENTS = ("freqtrade==2026.9", "ta-lib")
PAIR = "BTC/USDT"
SEED = 100  # bench/engine.py's one-symbol backtest uses seed 100
EXPIRY_MINUTES = 60  # EngineConfig().expiry_bars (12) x 5m
FEE_PER_SIDE = 0.0005  # EngineConfig().fee_bps (10) per trade, split over entry and exit
_OFFLINE = "_offline"  # the subcommand that runs inside the network namespace

_STRATEGY = '''
import talib.abstract as ta
from pandas import DataFrame

from freqtrade.strategy import IStrategy


class PeerStrategy(IStrategy):
    """EMA 12/26 cross up with RSI14 > 50; fixed TP (minimal_roi) / SL; 60 min expiry."""

    INTERFACE_VERSION = 3
    timeframe = "5m"
    can_short = False
    minimal_roi = {"0": __TP__, "__EXPIRY__": -1}
    stoploss = -__SL__
    use_exit_signal = False
    process_only_new_candles = True
    startup_candle_count = 100

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["ema_12"] = ta.EMA(dataframe, timeperiod=12)
        dataframe["ema_26"] = ta.EMA(dataframe, timeperiod=26)
        dataframe["rsi_14"] = ta.RSI(dataframe, timeperiod=14)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        spread = dataframe["ema_12"] - dataframe["ema_26"]
        cross_up = (spread > 0) & (spread.shift(1) <= 0)
        dataframe.loc[cross_up & (dataframe["rsi_14"] > 50), "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe
'''

# Runs in the freqtrade venv: socket guard, data files, config, timed `freqtrade backtesting`.
_DRIVER = '''
import ipaddress, json, socket, sys, time
from pathlib import Path

work, sim_url = Path(sys.argv[1]), sys.argv[2]
_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
)


def _loopback(host):
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _checked(address):
    if isinstance(address, tuple) and not _loopback(address[0]):
        raise OSError(f"peer benchmark: refused a connection to {address!r} (loopback only)")
    return address


socket.socket.connect = lambda self, a: _connect(self, _checked(a))
socket.socket.connect_ex = lambda self, a: _connect_ex(self, _checked(a))


def _resolve(host, *args, **kwargs):
    if host is not None and not _loopback(host):
        raise OSError(f"peer benchmark: refused to resolve {host!r} (loopback only)")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _resolve

import ccxt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from freqtrade.data.history import get_datahandler  # noqa: E402
from freqtrade.enums import CandleType  # noqa: E402
from freqtrade.optimize.backtesting import Backtesting  # noqa: E402


def _point_at(urls):
    if isinstance(urls, dict):
        return {k: _point_at(v) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://", "ws://", "wss://")):
        scheme, rest = urls.split("://", 1)
        path = rest[rest.find("/"):] if "/" in rest else ""
        base = sim_url if scheme.startswith("http") else "ws" + sim_url[4:]
        return base + path
    return urls


params = json.loads((work / "params.json").read_text())
datadir = work / "user_data" / "data" / "binance"
datadir.mkdir(parents=True, exist_ok=True)
handler = get_datahandler(datadir, "feather")
for timeframe in ("1m", "5m"):
    raw = np.load(work / f"bars_{timeframe}.npz")
    frame = pd.DataFrame({c: raw[c] for c in ("open", "high", "low", "close", "volume")})
    frame.insert(0, "date", pd.to_datetime(raw["ts_ms"], unit="ms", utc=True))
    handler.ohlcv_store(params["pair"], timeframe, frame, CandleType.SPOT)

urls = {"api": _point_at(ccxt.binance().urls["api"])}
ccxt_cfg = {
    "urls": urls,
    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
}
config = {
    "max_open_trades": 1,
    "stake_currency": "USDT",
    "stake_amount": 1000,
    "dry_run": True,
    "dry_run_wallet": 10000,
    "timeframe": "5m",
    "trading_mode": "spot",
    "margin_mode": "",
    "entry_pricing": {"price_side": "same", "use_order_book": False, "price_last_balance": 0.0},
    "exit_pricing": {"price_side": "same", "use_order_book": False},
    "exchange": {
        "name": "binance",
        "key": "",
        "secret": "",
        "pair_whitelist": [params["pair"]],
        "pair_blacklist": [],
        "ccxt_config": ccxt_cfg,
        "ccxt_async_config": ccxt_cfg,
    },
    "pairlists": [{"method": "StaticPairList"}],
    "dataformat_ohlcv": "feather",
    "backtest_cache": "none",
    "bot_name": "peer",
    "db_url": "sqlite://",
    "internals": {},
}
(work / "config.json").write_text(json.dumps(config))

timings, runs = {}, []


def _timed(name, fn):
    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
            runs.append(self)
    return wrapper


Backtesting.start = _timed("start", Backtesting.start)
Backtesting.load_bt_data = _timed("load_data", Backtesting.load_bt_data)
Backtesting._load_bt_data_detail = _timed("load_detail_data", Backtesting._load_bt_data_detail)
Backtesting.backtest = _timed("backtest_loop", Backtesting.backtest)

from freqtrade.main import main  # noqa: E402

argv = [
    "backtesting",
    "--config", str(work / "config.json"),
    "--userdir", str(work / "user_data"),
    "--datadir", str(datadir),
    "--strategy", "PeerStrategy",
    "--strategy-path", str(work),
    "--timeframe", "5m",
    "--timeframe-detail", "1m",
    "--fee", str(params["fee"]),
    "--export", "none",
    "--cache", "none",
]
try:
    main(argv)
except SystemExit as exit_:
    if exit_.code not in (0, None):
        raise
stats = runs[-1].results["strategy"]["PeerStrategy"]
exits = {row["key"]: row["trades"] for row in stats.get("exit_reason_summary", [])}
result = {
    "timings": timings,
    "trades": stats["total_trades"],
    "wins": stats["wins"],
    "profit_total_pct": round(100 * stats["profit_total"], 4),
    "exit_reasons": exits,
    "backtest_start": str(stats["backtest_start"]),
    "backtest_end": str(stats["backtest_end"]),
}
(work / "result.json").write_text(json.dumps(result))
'''


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> dict[str, Any]:
    """Create `bench/.venv-freqtrade` with freqtrade unless it works already; returns facts."""
    started = time.perf_counter()
    check = [str(_venv_python()), "-c", "import freqtrade, talib; print(freqtrade.__version__)"]
    probe = subprocess.run(check, capture_output=True, text=True, check=False)  # noqa: S603
    created = probe.returncode != 0
    if created:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)  # noqa: S603
        pip = [str(_venv_python()), "-m", "pip", "install", "-q", *FREQTRADE_REQUIREMENTS]
        subprocess.run(pip, check=True)  # noqa: S603
        probe = subprocess.run(check, capture_output=True, text=True, check=True)  # noqa: S603
    return {
        "freqtrade_version": probe.stdout.strip(),
        "venv_created": created,
        "venv_seconds": round(time.perf_counter() - started, 1),
    }


def _npz(path: Path, bars: pd.DataFrame) -> None:
    cols = {c: bars[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")}
    np.savez(
        path,
        ts_ms=index_ns(bars) // 1_000_000,
        volume=bars["volume"].to_numpy(dtype=np.float64),
        **cols,
    )


def _exits(bars_5m: pd.DataFrame) -> tuple[float, float]:
    """(tp, sl) as fractions of the entry: 2x and 1x the median 5m ATR14 / close."""
    cols = {c: bars_5m[c].to_numpy(dtype=np.float64) for c in ("high", "low", "close", "volume")}
    atr_pct = feature_arrays(cols["high"], cols["low"], cols["close"], cols["volume"])["atr_pct"]
    median = float(np.nanmedian(atr_pct)) / 100.0
    return round(2.0 * median, 6), round(1.0 * median, 6)


def _prepare(work: Path, days: float) -> dict[str, Any]:
    bars_1m = make_bars_1m(days=days, seed=SEED)
    bars_5m = resample_bars(bars_1m, "5m")
    _npz(work / "bars_1m.npz", bars_1m)
    _npz(work / "bars_5m.npz", bars_5m)
    tp, sl = _exits(bars_5m)
    strategy = (
        _STRATEGY.replace("__TP__", repr(tp))
        .replace("__SL__", repr(sl))
        .replace("__EXPIRY__", str(EXPIRY_MINUTES))
    )
    (work / "peer_strategy.py").write_text(strategy)
    (work / "driver.py").write_text(_DRIVER)
    params = {"pair": PAIR, "fee": FEE_PER_SIDE, "bars_1m": len(bars_1m), "tp": tp, "sl": sl}
    (work / "params.json").write_text(json.dumps(params))
    return params


def _run_offline(work: Path) -> None:
    """Simulator + freqtrade (inside the namespace, when there is one); writes timing.json."""
    with running_simulator(symbols=(PAIR,)) as sim_url:
        started = time.perf_counter()
        proc = subprocess.run(  # noqa: S603
            [str(_venv_python()), str(work / "driver.py"), str(work), sim_url],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
    (work / "freqtrade.log").write_text(proc.stdout + proc.stderr)
    if os.environ.get("PEER_KEEP_LOG"):
        shutil.copy(work / "freqtrade.log", os.environ["PEER_KEEP_LOG"])
    timing = {"returncode": proc.returncode, "process_seconds": seconds}
    (work / "timing.json").write_text(json.dumps(timing))


def _namespace_prefix() -> list[str]:
    """`unshare` into a fresh network namespace (loopback only), if this user may."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return []
    probe = [unshare, "--net", "--", ip, "link", "set", "lo", "up"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:  # noqa: S603
        return []
    return [unshare, "--net", "--", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']


def run_peer(days: float = 365.0) -> dict[str, Any]:
    """Backtest `days` of 1m candles of one symbol with freqtrade; JSON-safe figures."""
    venv = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="freqtrade-peer-") as tmp:
        work = Path(tmp)
        params = _prepare(work, days)
        prefix = _namespace_prefix()
        cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), _OFFLINE, str(work)]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # noqa: S603
        timing = json.loads((work / "timing.json").read_text())
        if timing["returncode"] != 0 or not (work / "result.json").exists():
            log = (work / "freqtrade.log").read_text()[-4000:]
            raise RuntimeError(f"freqtrade backtesting failed:\n{log}")
        result = json.loads((work / "result.json").read_text())
    backtest_s = result["timings"]["start"]
    return {
        **venv,
        "network": "own namespace, loopback only" if prefix else "loopback-only socket guard",
        "pair": PAIR,
        "timeframe": "5m",
        "timeframe_detail": "1m",
        "bars_1m": params["bars_1m"],
        "take_profit_pct": round(100 * params["tp"], 4),
        "stop_loss_pct": round(100 * params["sl"], 4),
        "backtest_seconds": round(backtest_s, 3),
        "backtest_breakdown_seconds": {k: round(v, 3) for k, v in result["timings"].items()},
        "process_seconds": round(timing["process_seconds"], 3),
        "bars_per_second": round(params["bars_1m"] / backtest_s),
        "trades": result["trades"],
        "wins": result["wins"],
        "profit_total_pct": result["profit_total_pct"],
        "exit_reasons": result["exit_reasons"],
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == _OFFLINE:
        _run_offline(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    args = parser.parse_args()
    print(json.dumps(run_peer(args.days), indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
