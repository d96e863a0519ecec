"""End-to-end backtest benchmark from the database, whole process against whole process.

Prints one JSON object. Data: the simulator's seeded `market_bars` for `S000/USDT`,
`S001/USDT`, ... over 2024 (one symbol-year each), stored through the project's own
validate + `store_klines` path into a database of its own (`--db`, created on the server
`--server`; `--drop` removes it at the end). Preparing is not timed and is skipped for
symbols already stored.

Measured, interleaved (`--repeats` rounds, each: every size, then the peers):
- `signalengine backtest` as a subprocess for 1, 20 (and `--sizes` ...) symbol-years: wall
  time, 1m bars/s, peak RSS of the process (`os.wait4` rusage: the largest resident set of
  the process; Dask workers are measured on their own) and the load / engine / store split
  from its JSON summary;
- the same with `--workers 1` and `--workers 2` (Dask LocalCluster) on the 20-symbol set;
- freqtrade's whole process (bench/freqtrade_peer.py) on symbol S000's bars;
- vectorbt 1.2 (bench/.venv-vectorbt, built on first use) on the same bars read from a
  parquet file, a comparable long-only rule (EMA12 crosses above EMA26 with RSI14 > 50 on
  5m, take profit / stop loss 2x / 1x the median ATR fraction, exits on 5m), cold (the
  process's first run, numba compiles) and warm (second run in the same process), whole
  process time too; a tz-naive index, as on pandas 3 a tz-aware one is ~80x slower;
- the read path alone for 4 symbol-years: ours (per symbol, one row of binary arrays
  parsed by numpy) against ADBC (Arrow batches from COPY, when `adbc-driver-postgresql`
  is installed; it is not a dependency of the project).

Our backtest runs twice per size: against a running Prefect server (`PREFECT_API_URL`,
as under `signalengine up` or compose) and, for the smallest size, alone, where the
process starts and stops Prefect's temporary server itself (~8 s + ~5 s here).

Run from the repository root on an otherwise idle machine, e.g.
`nice -n 10 .venv/bin/python bench/backtest_e2e.py --sizes 1,20 --repeats 2`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from signalengine.core.migrate import upgrade  # noqa: E402
from signalengine.simulator import market_bars  # noqa: E402
from signalengine.tasks.marketdata.klines import store_klines  # noqa: E402
from signalengine.tasks.marketdata.validation import validate_klines  # noqa: E402

START, END = "2024-01-01", "2025-01-01"
EXCHANGE = "binance"
TIMEFRAMES = ["1m", "5m", "15m", "1h"]
VBT_VENV = ROOT / "bench" / ".venv-vectorbt"
VBT_REQUIREMENTS = ("vectorbt==1.2.0", "pyarrow")


def symbol_name(i: int) -> str:
    return f"S{i:03d}/USDT"


def _frame(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    bars = market_bars(symbol, int(start.value // 1_000_000), int(end.value // 1_000_000))
    return pd.DataFrame(
        {
            "exchange": EXCHANGE,
            "symbol": symbol,
            "ts": pd.to_datetime(bars["ts"], unit="ms", utc=True),
            **{c: bars[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )


def prepare(url: str, symbols: int) -> dict[str, Any]:
    """Store the missing symbol-years (a month per write); returns what was stored."""
    upgrade(url)
    started, stored = time.perf_counter(), 0
    months = pd.date_range(START, END, freq="MS", tz="UTC")
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(symbols):
            symbol = symbol_name(i)
            row = conn.execute(
                "SELECT count(*) FROM klines WHERE exchange = %s AND symbol = %s",
                (EXCHANGE, symbol),
            ).fetchone()
            if row and row[0] >= 525_000:
                continue
            for lo, hi in zip(months[:-1], months[1:], strict=True):
                result = store_klines(
                    conn, validate_klines(_frame(symbol, lo, hi)), timeframes=TIMEFRAMES
                )
                stored += result.inserted
            print(f"stored {symbol}", file=sys.stderr, flush=True)
        conn.execute("ANALYZE klines")
    return {"bars_stored": stored, "seconds": round(time.perf_counter() - started, 1)}


def _loaded(run: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """`run(...)`'s result plus the machine's 1-minute load average before and after it
    (other engineers share the cores: a figure means little without it)."""
    before = os.getloadavg()[0]
    try:
        result = run(*args, **kwargs)
    except RuntimeError as exc:  # one failed run (a loaded machine) must not lose the rest
        result = {"error": str(exc).strip().splitlines()[-1][:300]}
    after = os.getloadavg()[0]
    return {**result, "loadavg_before": round(before, 2), "loadavg_after": round(after, 2)}


def _run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str, str]:
    """(wall seconds, peak RSS bytes of the process, stdout, stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss * 1024, stdout, stderr


_QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


@contextmanager
def prefect_server(port: int = 4297) -> Iterator[str]:
    """A Prefect server of its own (temporary home) on 127.0.0.1, as `up` or compose has."""
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as home:
        env = {**os.environ, **_QUIET, "PREFECT_HOME": home}
        prefect = Path(sys.executable).with_name("prefect")
        cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{api}/health", timeout=2):
                        break
                except OSError:
                    time.sleep(0.5)
            else:
                raise RuntimeError("Prefect server did not start")
            yield api
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def run_cli_backtest(
    url: str, symbols: int, *, workers: int = 0, api: str | None = None
) -> dict[str, Any]:
    """The whole `signalengine backtest` process over `symbols` symbol-years.

    `api`: a running Prefect server; without it the process starts Prefect's temporary
    server itself (what a lone CLI call does).
    """
    env = {**os.environ, **_QUIET, "SIGNALENGINE_DATABASE_URL": url}
    if api:
        env["PREFECT_API_URL"] = api
    else:  # Prefect's default 20 s for its temporary server is too short on a loaded machine
        env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    names = ",".join(symbol_name(i) for i in range(symbols))
    cmd = [sys.executable, "-m", "signalengine", "backtest", "--symbols", names]
    cmd += ["--start", START, "--end", END, "--run-id", f"e2e-{symbols}-{workers}"]
    if workers:
        cmd += ["--workers", str(workers)]
    wall, rss, stdout, _ = _run_measured(cmd, env)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "symbols": symbols,
        "workers": workers,
        "prefect": "running server" if api else "temporary server",
        "wall_seconds": round(wall, 2),
        "bars_1m": summary["bars_processed"],
        "bars_per_second": round(summary["bars_processed"] / wall),
        "peak_rss_mb": round(rss / 2**20),
        "split_seconds": summary["seconds_split"],
        "chunks": summary["chunks"],
        "signals": summary["signals"],
        "win_rate": summary["win_rate"],
    }


def run_cli_retrain(url: str, symbols: int, *, days: float, api: str) -> dict[str, Any]:
    """The whole `signalengine retrain` process (MLflow in a temporary state dir)."""
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as state:
        env = {**os.environ, **_QUIET, "SIGNALENGINE_DATABASE_URL": url, "PREFECT_API_URL": api}
        env |= {"SIGNALENGINE_STATE_DIR": state, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("SIGNALENGINE_MLFLOW_TRACKING_URI", None)
        names = ",".join(symbol_name(i) for i in range(symbols))
        cmd = [sys.executable, "-m", "signalengine", "retrain", "--symbols", names]
        cmd += ["--lookback-days", str(days)]
        wall, rss, stdout, _ = _run_measured(cmd, env)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "symbols": symbols,
        "days": days,
        "wall_seconds": round(wall, 2),
        "peak_rss_mb": round(rss / 2**20),
        "candidates": summary.get("metrics", {}).get("rows") if summary.get("metrics") else None,
        "decision": summary.get("decision", summary.get("skipped")),
    }


def read_path(url: str, symbols: int) -> dict[str, Any]:
    """The 1m read alone: ours (binary arrays -> numpy) and ADBC (COPY -> Arrow), seconds."""
    from signalengine.tasks.marketdata.columnar import read_bars

    names = [symbol_name(i) for i in range(symbols)]
    start, end = pd.Timestamp(START, tz="UTC"), pd.Timestamp(END, tz="UTC")
    out: dict[str, Any] = {"symbols": symbols}
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        cols = read_bars(
            conn, exchange=EXCHANGE, symbols=names, timeframe="1m", start=start, end=end
        )
        out["binary_arrays_numpy_seconds"] = round(time.perf_counter() - began, 3)
        out["rows"] = len(cols)
        del cols
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        out["adbc"] = "adbc-driver-postgresql not installed"
        return out
    query = (
        "SELECT ts, open, high, low, close, volume FROM klines WHERE exchange = $1"
        " AND symbol = $2 AND ts >= $3 AND ts < $4 ORDER BY ts"
    )  # per symbol, as ours: no server-side sort
    with adbc.connect(url) as conn, conn.cursor() as cur:
        began, rows = time.perf_counter(), 0
        for name in names:
            cur.execute(query, (EXCHANGE, name, start.to_pydatetime(), end.to_pydatetime()))
            table = cur.fetch_arrow_table()
            arrays = {c: table.column(c).to_numpy() for c in table.column_names}
            rows += len(arrays["ts"])
        out["adbc_arrow_numpy_seconds"] = round(time.perf_counter() - began, 3)
        out["adbc_rows"] = rows
    return out


def _vbt_python() -> Path:
    return VBT_VENV / "bin" / "python"


def ensure_vbt_venv() -> None:
    if not _vbt_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VBT_VENV)], check=True)
        subprocess.run(
            [str(_vbt_python()), "-m", "pip", "install", "-q", *VBT_REQUIREMENTS], check=True
        )


_VBT_DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, pandas as pd, vectorbt as vbt
t_import = time.perf_counter() - t0

def run(path):
    t = time.perf_counter()
    bars = pd.read_parquet(path)
    bars.index = pd.DatetimeIndex(bars.index).tz_localize(None)  # tz-naive: see the bench doc
    five = bars.resample("5min", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    close = five["close"]
    fast = vbt.MA.run(close, 12, ewm=True).ma
    slow = vbt.MA.run(close, 26, ewm=True).ma
    rsi = vbt.RSI.run(close, 14).rsi
    atr = vbt.ATR.run(five["high"], five["low"], close, 14).atr
    frac = float(np.nanmedian((atr / close).to_numpy()))
    entries = (fast > slow) & (fast.shift(1) <= slow.shift(1)) & (rsi > 50)
    pf = vbt.Portfolio.from_signals(close, entries, exits=None, tp_stop=2 * frac, sl_stop=frac,
                                    fees=0.0005, freq="5min")
    trades = int(pf.trades.count())
    return time.perf_counter() - t, trades, len(bars)

cold, trades, n = run(sys.argv[1])
warm, _, _ = run(sys.argv[1])
print(json.dumps({"import_seconds": t_import, "cold_seconds": cold, "warm_seconds": warm,
                  "trades": trades, "bars_1m": n, "vectorbt": vbt.__version__}))
"""


def run_vectorbt(url: str) -> dict[str, Any]:
    """vectorbt on S000's bars from parquet, in its own venv: cold, warm and whole process."""
    from signalengine.tasks.runs.history import load_history

    ensure_vbt_venv()
    with psycopg.connect(url) as conn:
        bars = load_history(
            conn,
            exchange=EXCHANGE,
            symbols=[symbol_name(0)],
            start=pd.Timestamp(START, tz="UTC"),
            end=pd.Timestamp(END, tz="UTC"),
        )[symbol_name(0)]
    with tempfile.TemporaryDirectory(prefix="vbt-") as tmp:
        parquet = Path(tmp) / "bars.parquet"
        bars.to_parquet(parquet)
        driver = Path(tmp) / "drive.py"
        driver.write_text(_VBT_DRIVER)
        wall, rss, stdout, _ = _run_measured(
            [str(_vbt_python()), str(driver), str(parquet)], dict(os.environ)
        )
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    result["process_seconds_cold_plus_warm"] = round(wall, 2)
    result["process_seconds_one_run"] = round(wall - result["warm_seconds"], 2)
    result["peak_rss_mb"] = round(rss / 2**20)
    return result


def run_freqtrade(url: str) -> dict[str, Any]:
    """freqtrade's whole process on S000's stored bars (bench/freqtrade_peer.py)."""
    from bench.freqtrade_peer import run_peer
    from signalengine.tasks.runs.history import load_history

    with psycopg.connect(url) as conn:
        bars = load_history(
            conn,
            exchange=EXCHANGE,
            symbols=[symbol_name(0)],
            start=pd.Timestamp(START, tz="UTC"),
            end=pd.Timestamp(END, tz="UTC"),
        )[symbol_name(0)]
    peer = run_peer(bars_1m=bars)
    keep = ("process_seconds", "backtest_seconds", "bars_1m", "trades", "network")
    return {k: peer[k] for k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db", default="signalengine_bench_e2e")
    parser.add_argument("--sizes", default="1,20", help="symbol-years per run, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dask", default="1,2", help="Dask worker counts on the 20 set ('' none)")
    parser.add_argument("--no-freqtrade", action="store_true")
    parser.add_argument("--no-vectorbt", action="store_true")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--retrain", action="store_true", help="also retrain 20 x 90 days")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    url = psycopg.conninfo.make_conninfo(args.server, dbname=args.db)
    with psycopg.connect(args.server, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (args.db,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{args.db}"')
    report: dict[str, Any] = {
        "prepare": prepare(url, max(sizes)),
        "machine": {"cpus": os.cpu_count()},
    }
    if args.prepare_only:
        print(json.dumps(report))
        return
    rounds: list[dict[str, Any]] = []
    dask_workers = [int(w) for w in args.dask.split(",") if w]
    with prefect_server() as api:
        for _ in range(args.repeats):
            one: dict[str, Any] = {
                "backtest": [_loaded(run_cli_backtest, url, n, api=api) for n in sizes],
                "backtest_standalone": [_loaded(run_cli_backtest, url, min(sizes))],
            }
            one["dask"] = [
                _loaded(run_cli_backtest, url, min(20, max(sizes)), workers=w, api=api)
                for w in dask_workers
            ]
            if not args.no_freqtrade:
                one["freqtrade"] = _loaded(run_freqtrade, url)
            if not args.no_vectorbt:
                one["vectorbt"] = _loaded(run_vectorbt, url)
            one["read_path"] = _loaded(read_path, url, min(4, max(sizes)))
            if args.retrain:
                one["retrain"] = _loaded(
                    run_cli_retrain, url, min(20, max(sizes)), days=90, api=api
                )
            rounds.append(one)
    report["rounds"] = rounds
    report["ratios"] = _ratios(rounds)
    if args.drop:
        with psycopg.connect(args.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    print(json.dumps(report, indent=1))


def _ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole process against whole process, one symbol-year, per round."""
    out: dict[str, list[float]] = {
        "freqtrade_over_ours": [],
        "vectorbt_over_ours": [],
        "freqtrade_over_ours_standalone": [],
    }
    for one in rounds:
        ours = next((b.get("wall_seconds") for b in one["backtest"] if b.get("symbols") == 1), None)
        alone = one["backtest_standalone"][0].get("wall_seconds")
        if ours is None:
            continue
        if "process_seconds" in one.get("freqtrade", {}):
            ft = one["freqtrade"]["process_seconds"]
            out["freqtrade_over_ours"].append(round(ft / ours, 2))
            if alone:
                out["freqtrade_over_ours_standalone"].append(round(ft / alone, 2))
        if "process_seconds_one_run" in one.get("vectorbt", {}):
            out["vectorbt_over_ours"].append(
                round(one["vectorbt"]["process_seconds_one_run"] / ours, 2)
            )
    return out


if __name__ == "__main__":
    main()
