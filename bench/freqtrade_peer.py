"""freqtrade's backtester on the engine benchmark's data: the peer figure for bench/engine.py.

freqtrade pins many dependencies, so it never enters the project's venv: `ensure_venv`
builds `bench/.venv-freqtrade` once (`pip install` of FREQTRADE_REQUIREMENTS; gitignored)
and every later run reuses it.

One run (`run_peer`): the same seeded synthetic 1m candles as the engine benchmark's
one-symbol backtest (`tests.utils.bars.make_bars_1m`, seed SEED) and their 5m buckets
(`tasks.engine.buckets.resample_bars`) are stored with freqtrade's own feather data handler in
a temporary `user_data`; then `freqtrade backtesting` runs PeerStrategy on BTC/USDT with
timeframe 5m and `--timeframe-detail 1m`: entries on 5m closes, exits walked on the 1m
candles, as our engine's 5m signals settle on 1m bars.

Offline: freqtrade's exchange object loads the markets through ccxt even to backtest.
Every ccxt Binance URL is pointed (`ccxt_config` / `ccxt_async_config` `urls`) at the
project's Binance simulator (`simulator.running_simulator`, 127.0.0.1), whose
`exchangeInfo` ccxt parses, so the real ccxt and freqtrade code run. The freqtrade
process refuses sockets and name lookups for non-loopback addresses, and where
`unshare` is allowed (root) simulator and freqtrade run in a new network namespace that
has only a loopback interface.

PeerStrategy, long only (spot freqtrade cannot short): enter on the 5m close where EMA12
crosses above EMA26 with RSI14 > 50; take profit `minimal_roi` tp, stop loss `stoploss`
-sl, fixed fractions = 2x / 1x the median 5m ATR14/close of the data (our engine: 2x / 1x
the ATR of each signal bar); a trade still open after 60 minutes exits (`minimal_roi`
{"60": -1}; our expiry is 12 5m bars); one trade at a time; fee 0.05 % per side (our
10 bps per trade). Our pipeline does much more per bar (20 features, 6 event detectors,
4-timeframe MTF votes, both sides, overlapping signals): the comparison flatters
freqtrade, if anything.

Run: `.venv/bin/python bench/freqtrade_peer.py [--days 365]` prints one JSON object.
This file is also the driver that the freqtrade venv runs (`_drive`), so it imports
only the standard library at module level.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venv-freqtrade"
FREQTRADE_REQUIREMENTS = ("freqtrade==2026.9", "ta-lib")
PAIR = "BTC/USDT"
SEED = 100  # the seed of the engine benchmark's one-symbol backtest
EXPIRY_MINUTES = 60  # EngineConfig().expiry_bars (12) x 5m
FEE_PER_SIDE = 0.0005  # EngineConfig().fee_bps (10) per trade, split over entry and exit
STRATEGY = "PeerStrategy"
_OFFLINE, _DRIVE = "_offline", "_drive"  # internal subcommands (see run_peer)

_STRATEGY_SOURCE = '''"""EMA 12/26 cross up with RSI14 > 50; TP, SL and expiry: see the config."""

import talib.abstract as ta
from pandas import DataFrame

from freqtrade.strategy import IStrategy


class PeerStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    can_short = False
    minimal_roi = {"0": 0.01}
    stoploss = -0.01
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


# --- in the project's venv ------------------------------------------------------------


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> dict[str, Any]:
    """Create `bench/.venv-freqtrade` with freqtrade unless it works already; returns facts."""
    started = time.perf_counter()
    check = [str(_venv_python()), "-c", "import freqtrade, talib; print(freqtrade.__version__)"]
    created = not _venv_python().exists()
    if not created:
        probe = subprocess.run(check, capture_output=True, text=True, check=False)
        created = probe.returncode != 0
    if created:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(_venv_python()), "-m", "pip", "install", "-q", *FREQTRADE_REQUIREMENTS]
        subprocess.run(pip, check=True)
        probe = subprocess.run(check, capture_output=True, text=True, check=True)
    return {
        "freqtrade_version": probe.stdout.strip(),
        "venv_created": created,
        "venv_seconds": round(time.perf_counter() - started, 1),
    }


def _prepare(work: Path, days: float, bars_1m: Any = None) -> dict[str, Any]:
    """Candles (npz: ts_ms + OHLCV, 1m and 5m), strategy file and run parameters in `work`.

    `bars_1m` (a UTC-indexed OHLCV frame) replaces the seeded synthetic candles.
    """
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, index_ns, resample_bars
    from signalengine.tasks.engine.features import feature_arrays
    from tests.utils.bars import make_bars_1m

    bars = {"1m": make_bars_1m(days=days, seed=SEED) if bars_1m is None else bars_1m}
    bars["5m"] = resample_bars(bars["1m"], "5m")
    for tf, frame in bars.items():
        arrays: dict[str, Any] = {"ts_ms": index_ns(frame) // 1_000_000}
        arrays.update({c: frame[c].to_numpy(dtype=np.float64) for c in OHLCV_COLUMNS})
        np.savez(work / f"bars_{tf}.npz", **arrays)
    five = {c: bars["5m"][c].to_numpy(dtype=np.float64) for c in ("high", "low", "close")}
    volume = bars["5m"]["volume"].to_numpy(dtype=np.float64)
    atr_pct = feature_arrays(five["high"], five["low"], five["close"], volume)["atr_pct"]
    median = float(np.nanmedian(atr_pct)) / 100.0
    (work / "peer_strategy.py").write_text(_STRATEGY_SOURCE)
    params = {
        "pair": PAIR,
        "fee": FEE_PER_SIDE,
        "bars_1m": len(bars["1m"]),
        "tp": round(2.0 * median, 6),
        "sl": round(1.0 * median, 6),
        "expiry_minutes": EXPIRY_MINUTES,
    }
    (work / "params.json").write_text(json.dumps(params))
    return params


def _run_offline(work: Path) -> None:
    """Simulator + the freqtrade driver (inside the namespace, if any); writes timing.json."""
    sys.path.insert(0, str(ROOT))
    from signalengine.simulator import running_simulator

    with running_simulator(symbols=(PAIR,)) as sim_url:
        started = time.perf_counter()
        cmd = [str(_venv_python()), str(Path(__file__).resolve()), _DRIVE, str(work), sim_url]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    (work / "freqtrade.log").write_text(proc.stdout + proc.stderr)
    timing = {"returncode": proc.returncode, "process_seconds": seconds}
    (work / "timing.json").write_text(json.dumps(timing))


def _namespace_prefix() -> list[str]:
    """`unshare` into a new network namespace with only loopback, if this user may."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return []
    probe = [unshare, "--net", "--", ip, "link", "set", "lo", "up"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        return []
    return [unshare, "--net", "--", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']


def run_peer(
    days: float = 365.0, *, keep_log: Path | None = None, bars_1m: Any = None
) -> dict[str, Any]:
    """Backtest `days` of 1m candles of one symbol with freqtrade; JSON-safe figures.

    `backtest_seconds` is the wall time of freqtrade's `Backtesting.start` (read the
    feather files, indicators and signals, the candle loop, the statistics);
    `process_seconds` that of the whole freqtrade process (imports, config, markets
    from the simulator, report). Building the venv and writing the data are not timed.
    """
    venv = ensure_venv()
    prefix = _namespace_prefix()
    with tempfile.TemporaryDirectory(prefix="freqtrade-peer-") as tmp:
        work = Path(tmp)
        params = _prepare(work, days, bars_1m)
        cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), _OFFLINE, str(work)]
        subprocess.run(cmd, check=True)
        if keep_log is not None:
            shutil.copy(work / "freqtrade.log", keep_log)
        timing = json.loads((work / "timing.json").read_text())
        if timing["returncode"] != 0 or not (work / "result.json").exists():
            log = (work / "freqtrade.log").read_text()[-4000:]
            raise RuntimeError(f"freqtrade backtesting failed:\n{log}")
        result = json.loads((work / "result.json").read_text())
    seconds = result["timings"]["start"]
    return {
        **venv,
        "network": "own namespace, loopback only" if prefix else "loopback-only socket guard",
        "markets_from_simulator": result["markets"],
        "pair": PAIR,
        "timeframe": "5m",
        "timeframe_detail": "1m",
        "bars_1m": params["bars_1m"],
        "take_profit_pct": round(100 * params["tp"], 4),
        "stop_loss_pct": round(100 * params["sl"], 4),
        "backtest_seconds": round(seconds, 3),
        "backtest_breakdown_seconds": {k: round(v, 3) for k, v in result["timings"].items()},
        "process_seconds": round(timing["process_seconds"], 3),
        "bars_per_second": round(params["bars_1m"] / seconds),
        "trades": result["trades"],
        "wins": result["wins"],
        "profit_total_pct": result["profit_total_pct"],
        "exit_reasons": result["exit_reasons"],
    }


# --- in the freqtrade venv --------------------------------------------------------------


def _guard_sockets() -> None:
    """Refuse connections and name lookups for anything but loopback (before ccxt loads)."""
    import ipaddress
    import socket

    def loopback(host: object) -> bool:
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return host == "localhost"

    def checked(address: Any) -> Any:
        if isinstance(address, tuple) and not loopback(address[0]):
            raise OSError(f"freqtrade peer: refused to connect to {address!r} (loopback only)")
        return address

    connect, connect_ex, getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not loopback(host):
            raise OSError(f"freqtrade peer: refused to resolve {host!r} (loopback only)")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = lambda self, a: connect(self, checked(a))  # type: ignore[method-assign]
    socket.socket.connect_ex = lambda self, a: connect_ex(self, checked(a))  # type: ignore[method-assign]
    socket.getaddrinfo = resolve


def _point_at(urls: Any, sim_url: str) -> Any:
    """Every URL in a ccxt `urls['api']` tree moved to the simulator, path kept."""
    if isinstance(urls, dict):
        return {key: _point_at(value, sim_url) for key, value in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        scheme, rest = urls.split("://", 1)
        path = rest[rest.find("/") :] if "/" in rest else ""
        return (sim_url if scheme.startswith("http") else "ws" + sim_url[4:]) + path
    return urls


def _freqtrade_config(params: dict[str, Any], sim_url: str) -> dict[str, Any]:
    import ccxt

    ccxt_config = {
        "urls": {"api": _point_at(ccxt.binance().urls["api"], sim_url)},
        "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
    }
    return {
        "max_open_trades": 1,
        "stake_currency": "USDT",
        "stake_amount": 1000,
        "dry_run": True,
        "dry_run_wallet": 10000,
        "timeframe": "5m",
        "trading_mode": "spot",
        "margin_mode": "",
        "minimal_roi": {"0": params["tp"], str(params["expiry_minutes"]): -1},
        "stoploss": -params["sl"],
        "entry_pricing": {"price_side": "same", "use_order_book": False},
        "exit_pricing": {"price_side": "same", "use_order_book": False},
        "exchange": {
            "name": "binance",
            "key": "",
            "secret": "",
            "pair_whitelist": [params["pair"]],
            "pair_blacklist": [],
            "ccxt_config": ccxt_config,
            "ccxt_async_config": ccxt_config,
        },
        "pairlists": [{"method": "StaticPairList"}],
        "dataformat_ohlcv": "feather",
        "backtest_cache": "none",
        "bot_name": "peer",
        "db_url": "sqlite://",
        "internals": {},
    }


def _drive(work: Path, sim_url: str) -> None:
    """Store the candles, write the config, run `freqtrade backtesting`; writes result.json."""
    _guard_sockets()
    import numpy as np
    import pandas as pd
    from freqtrade.data.history import get_datahandler
    from freqtrade.enums import CandleType
    from freqtrade.main import main as freqtrade_main
    from freqtrade.optimize.backtesting import Backtesting

    params = json.loads((work / "params.json").read_text())
    datadir = work / "user_data" / "data" / "binance"
    datadir.mkdir(parents=True)
    handler = get_datahandler(datadir, "feather")
    for tf in ("1m", "5m"):
        raw = np.load(work / f"bars_{tf}.npz")
        frame = pd.DataFrame({c: raw[c] for c in ("open", "high", "low", "close", "volume")})
        frame.insert(0, "date", pd.to_datetime(raw["ts_ms"], unit="ms", utc=True))
        handler.ohlcv_store(params["pair"], tf, frame, CandleType.SPOT)
    config = work / "config.json"
    config.write_text(json.dumps(_freqtrade_config(params, sim_url)))

    timings: dict[str, float] = {}
    instances: list[Any] = []

    def timed(name: str, method: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
                instances.append(self)

        return wrapper

    Backtesting.start = timed("start", Backtesting.start)
    Backtesting.load_bt_data = timed("load_data", Backtesting.load_bt_data)
    Backtesting.backtest = timed("candle_loop", Backtesting.backtest)
    # freqtrade's own command line, as a user would run it.
    args = ["backtesting", "--config", str(config), "--userdir", str(work / "user_data")]
    args += ["--datadir", str(datadir), "--strategy", STRATEGY, "--strategy-path", str(work)]
    args += ["--timeframe", "5m", "--timeframe-detail", "1m", "--fee", str(params["fee"])]
    args += ["--export", "none", "--cache", "none"]
    try:
        freqtrade_main(args)
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    backtesting = instances[-1]
    stats = backtesting.results["strategy"][STRATEGY]
    result = {
        "timings": timings,
        "markets": sorted(backtesting.exchange.markets),  # as ccxt parsed the simulator's
        "trades": stats["total_trades"],
        "wins": stats["wins"],
        "profit_total_pct": round(100 * stats["profit_total"], 4),
        "exit_reasons": {row["key"]: row["trades"] for row in stats["exit_reason_summary"]},
    }
    (work / "result.json").write_text(json.dumps(result))


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == _OFFLINE:
        _run_offline(Path(sys.argv[2]))
        return
    if len(sys.argv) >= 4 and sys.argv[1] == _DRIVE:
        _drive(Path(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--keep-log", type=Path, help="copy freqtrade's output here")
    args = parser.parse_args()
    print(json.dumps(run_peer(args.days, keep_log=args.keep_log), indent=2))


if __name__ == "__main__":
    main()
