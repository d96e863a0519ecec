"""Live end to end: simulator kline close -> signal message at a WebSocket client.

Prints one JSON object. Everything runs as real processes on 127.0.0.1, as a deployment
has them: a Prefect server, `signalengine sim` with `--symbols N` symbols (`S000/USDT`,
`S001/USDT`, ...) at `--speed`, `signalengine stream` and `signalengine api`, on a fresh
PostgreSQL database of their own (created on `--server`, dropped at the end unless
`--keep`) and a fresh state dir; telemetry is off in every child.

Measured over `--duration` real seconds, after a warm-up (the stream's cold start has
fetched `--history-days` over REST and evaluated a first close, no closed bar has
waited a minute of exchange time to be stored and at most one stored minute awaits
evaluation, or `--settle` real seconds have passed since that first close):

- latency of every signal message: the simulator's bar close (the signal's trigger bar
  open `ts` + one primary bar, in exchange time) mapped to the wall clock through the
  simulator's own clock (`sim = anchor + real_elapsed * speed`, read at /sim/status with
  the lowest round trip of several), to the moment the client received the message;
  p50/p99/max, plus the second leg alone (`created_at`, the storing transaction's start,
  to receive: insert, commit with its NOTIFY, the API's fetch and send);
- the stream's per-close split from its metrics port
  (`stream_close_stage_duration_seconds{stage}`: state_update, compute, store; the
  signals NOTIFY is sent by the trigger inside the store transaction, at its commit),
  deltas over the window: mean and the p99 bucket bound per stage;
- the stream's peak RSS (VmHWM of its process, and the largest sampled RSS in the window),
  the ingest lag sampled every second (exchange time since the close of the oldest bar
  not yet stored, over all symbols: 0 when every closed bar is in; in real seconds too)
  and the stream's own `stream_ingest_lag_seconds` (its definition: exchange clock minus
  the close of the slowest symbol's newest bar, so up to a minute even when current) and
  `event_queue_depth` (stored minutes awaiting evaluation); `kept_up` = that lag stayed
  under one minute of exchange time, every primary close of the window was evaluated and
  at most one minute awaited evaluation at the end;
- the NOTIFY path alone (`notify_path`): `--notify-signals` signals stored in one call,
  per-row INSERTs with the old per-row trigger (sql/003) against `insert_signals` with
  the statement trigger (sql/011), to the moment a LISTENing connection had every id;
- H1's in-process `process_closes` figure (bench/live_inprocess.py, when it exists), run
  as a subprocess at `--inprocess-symbols`.

Signals must fire every minute even at small N, so the engine is configured for it (the
JSON's "config" says so): 1m primary timeframe over 1m/5m/15m/1h, score threshold 0.05
(any single event), MTF alignment not required, no cooldown.

    .venv/bin/python bench/live.py                       # quick: 20 symbols, 60 s
    nice -n 5 .venv/bin/python bench/live.py --symbols 500 --speed 10 --duration 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.types.json import Jsonb
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backtest_e2e import prefect_server  # noqa: E402
from signalengine.core.telemetry import TELEMETRY_OFF  # noqa: E402

EXCHANGE = "binance"
PRIMARY = "1m"
PRIMARY_MS = 60_000
STAGE_METRIC = "stream_close_stage_duration_seconds"
ENGINE_SETTINGS = {
    "SIGNALENGINE_PRIMARY_TIMEFRAME": PRIMARY,
    "SIGNALENGINE_TIMEFRAMES": json.dumps(["1m", "5m", "15m", "1h"]),
    "SIGNALENGINE_SIGNAL_SCORE_THRESHOLD": "0.05",
    "SIGNALENGINE_MTF_ALIGNMENT_REQUIRED": "false",
    "SIGNALENGINE_COOLDOWN_BARS": "0",
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def symbol_names(n: int) -> list[str]:
    return [f"S{i:03d}/USDT" if n <= 1000 else f"S{i:04d}/USDT" for i in range(n)]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


# -- the stack -----------------------------------------------------------------------------


@dataclass
class Ports:
    sim: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    prefect: int = field(default_factory=free_port)


@contextmanager
def database(server: str, name: str, *, keep: bool) -> Iterator[str]:
    """A database of its own on `server` (created, upgraded, dropped unless `keep`)."""
    ident = sql.Identifier(name)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    url = psycopg.conninfo.make_conninfo(server, dbname=name)
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


class Children:
    """Processes this bench started; stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> int:
        log = (self.logs / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "signalengine", *args]
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc.pid

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")

    def tail(self, name: str, chars: int = 1500) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return text[-chars:]

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def _get(url: str, *, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
    return body


def wait_http(url: str, children: Children, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        children.check()
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


# -- clocks and samples ----------------------------------------------------------------------


@dataclass(frozen=True)
class SimClock:
    """Maps the simulator's exchange time to this machine's wall clock."""

    sim_ms: int  # exchange time read ...
    wall: float  # ... at this wall time (middle of the request)
    speed: float
    rtt: float

    @classmethod
    def read(cls, base: str, *, samples: int = 7) -> SimClock:
        best: SimClock | None = None
        for _ in range(samples):
            before = time.time()
            status = json.loads(_get(f"{base}/sim/status"))
            after = time.time()
            clock = cls(
                int(status["sim_time_ms"]), (before + after) / 2, status["speed"], after - before
            )
            if best is None or clock.rtt < best.rtt:
                best = clock
        assert best is not None
        return best

    def wall_at(self, sim_ms: float) -> float:
        return self.wall + (sim_ms - self.sim_ms) / 1000 / self.speed

    def sim_at(self, wall: float) -> float:
        return self.sim_ms + (wall - self.wall) * 1000 * self.speed


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text -> {sample name: {labels: value}}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(_get(url).decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def _one(metrics: dict[str, dict[Any, float]], name: str) -> float | None:
    values = list(metrics.get(name, {}).values())
    return values[0] if values else None


def stage_split(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per-stage mean and p99 bucket bound (ms) of the closes between two scrapes."""
    split: dict[str, Any] = {}
    counts = after.get(f"{STAGE_METRIC}_count", {})
    for key, total in counts.items():
        stage = dict(key).get("stage", "?")
        n = total - before.get(f"{STAGE_METRIC}_count", {}).get(key, 0.0)
        if n <= 0:
            continue
        seconds = after[f"{STAGE_METRIC}_sum"][key] - before.get(f"{STAGE_METRIC}_sum", {}).get(
            key, 0.0
        )
        buckets = []
        for bkey, value in after.get(f"{STAGE_METRIC}_bucket", {}).items():
            labels = dict(bkey)
            if labels.get("stage") != stage:
                continue
            old = before.get(f"{STAGE_METRIC}_bucket", {}).get(bkey, 0.0)
            buckets.append((float(labels["le"]), value - old))
        buckets.sort()
        p99 = next((le for le, c in buckets if c >= 0.99 * n), math.inf)
        split[stage] = {
            "closes": int(n),
            "mean_ms": round(seconds / n * 1000, 2),
            "p99_le_ms": None if math.isinf(p99) else round(p99 * 1000, 1),
        }
    return split


@dataclass
class Samples:
    """What the sampler saw, once a second."""

    lag_sim_s: list[float] = field(default_factory=list)
    stream_lag_s: list[float] = field(default_factory=list)
    queue_depth: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


def slowest_newest_bar_ms(conn: psycopg.Connection[Any], symbols: list[str]) -> int | None:
    """Close-aligned open time (ms) of the newest stored bar of the slowest symbol."""
    row = conn.execute(
        "SELECT min(extract(epoch FROM newest) * 1000)::bigint, count(newest)"
        " FROM unnest(%s::text[]) AS s(symbol)"
        " CROSS JOIN LATERAL (SELECT max(ts) AS newest FROM klines"
        "  WHERE exchange = %s AND symbol = s.symbol) AS n",
        (symbols, EXCHANGE),
    ).fetchone()
    if row is None or row[1] < len(symbols):
        return None
    return int(row[0])


async def sample_forever(
    url: str,
    symbols: list[str],
    clock: SimClock,
    metrics_url: str,
    stream: psutil.Process,
    out: Samples,
) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            newest = await asyncio.to_thread(slowest_newest_bar_ms, conn, symbols)
            if newest is not None:
                # how long the oldest closed bar not yet stored has waited (0: none waits)
                waited = clock.sim_at(time.time()) - (newest + 2 * PRIMARY_MS)
                out.lag_sim_s.append(max(0.0, waited) / 1000)
            try:
                metrics = await asyncio.to_thread(scrape, metrics_url)
                for name, bucket in (
                    ("stream_ingest_lag_seconds", out.stream_lag_s),
                    ("event_queue_depth", out.queue_depth),
                ):
                    value = _one(metrics, name)
                    if value is not None:
                        bucket.append(value)
            except OSError:
                pass
            out.rss.append(stream.memory_info().rss)
            out.load.append(os.getloadavg()[0])
            await asyncio.sleep(1.0)


def _stored_counts(conn: psycopg.Connection[Any], stamps: list[datetime]) -> list[Any]:
    return conn.execute(
        "SELECT ts, count(*) FROM klines WHERE exchange = %s AND ts = ANY(%s) GROUP BY ts",
        (EXCHANGE, stamps),
    ).fetchall()


async def watch_stored(
    url: str, symbols: list[str], clock: SimClock, stored_at: dict[int, float]
) -> None:
    """When each minute's bars of every symbol were all stored (polled every 0.05 s)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            now_sim = clock.sim_at(time.time())
            newest_open = int(now_sim // PRIMARY_MS) * PRIMARY_MS - PRIMARY_MS
            wanted = [
                newest_open - i * PRIMARY_MS
                for i in range(5)
                if newest_open - i * PRIMARY_MS not in stored_at
            ]
            if wanted:
                stamps = [datetime.fromtimestamp(ms / 1000, tz=UTC) for ms in wanted]
                rows = await asyncio.to_thread(_stored_counts, conn, stamps)
                seen = time.time()
                for ts, count in rows:
                    if count >= len(symbols):
                        stored_at[int(ts.timestamp() * 1000)] = seen
            await asyncio.sleep(0.05)


async def watch_exchange(base_ws: str, symbol: str, emitted_at: dict[int, float]) -> None:
    """When the simulator's closed kline of one symbol reached a client like the stream's."""
    stream = symbol.replace("/", "").lower() + "@kline_1m"
    async with connect(f"{base_ws}/ws/{stream}", max_queue=None) as ws:
        async for raw in ws:
            wall = time.time()
            kline = json.loads(raw).get("k") or {}
            if kline.get("x") is True:
                emitted_at.setdefault(int(kline["t"]), wall)


# -- the client --------------------------------------------------------------------------------


@dataclass
class Received:
    wall: float
    ts: datetime
    created_at: datetime
    signal_id: str


@dataclass
class FeedLog:
    signals: list[Received] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)  # (code, reason) of closes
    other: int = 0


async def listen_feed(url: str, token: str, log: FeedLog, connected: asyncio.Event) -> None:
    """One client on /ws/feed for the whole run; reconnects with `since` if closed."""
    since: str | None = None
    while True:
        target = url if since is None else f"{url}?since={since}"
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(target, additional_headers=headers, max_queue=None, max_size=None) as ws:
            async for raw in ws:
                wall = time.time()
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "connected":
                    connected.set()
                elif kind == "signal":
                    data = message["data"]
                    log.signals.append(
                        Received(
                            wall,
                            datetime.fromisoformat(data["ts"]),
                            datetime.fromisoformat(data["created_at"]),
                            data["id"],
                        )
                    )
                else:
                    log.other += 1
            code = ws.close_code or 0
            log.closes.append((code, ws.close_reason or ""))
        newest = log.signals[-1].created_at if log.signals else None
        if newest is not None:  # `since` is exclusive; one transaction shares a created_at
            moment = (newest - timedelta(microseconds=1)).astimezone(UTC)
            since = moment.isoformat().replace("+00:00", "Z")
        await asyncio.sleep(0.5)


# -- the NOTIFY path alone ----------------------------------------------------------------------

_OLD_ROW_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_notify_row() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('signals', json_build_object(
        'id', NEW.id, 'run_id', NEW.run_id, 'symbol', NEW.symbol,
        'direction', NEW.direction, 'timeframe', NEW.timeframe)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS signals_notify ON signals;
CREATE TRIGGER signals_notify AFTER INSERT ON signals
    FOR EACH ROW EXECUTE FUNCTION bench_notify_row();
"""
_BASE_COLUMNS = (
    "id", "run_id", "exchange", "symbol", "timeframe", "direction", "ts", "emitted_at",
    "entry_price", "take_profit", "stop_loss", "expires_at", "score", "events",
    "mtf_aligned", "mtf_score", "mtf_details", "ai_probability", "model_version",
    "features", "status",
)  # fmt: skip


def _bench_rows(n: int, minute: int) -> list[dict[str, Any]]:
    ts = datetime.fromisoformat("2020-01-01T00:00:00+00:00") + timedelta(minutes=minute)
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": uuid.uuid4(), "run_id": "bench-notify", "exchange": EXCHANGE,
                "symbol": f"S{i:03d}/USDT", "timeframe": PRIMARY, "direction": "long",
                "ts": ts, "emitted_at": ts + timedelta(minutes=1), "entry_price": 100.0,
                "take_profit": 102.0, "stop_loss": 99.0, "expires_at": ts + timedelta(hours=1),
                "score": 0.6, "events": [{"type": "ema_cross", "direction": "long"}],
                "mtf_aligned": False, "mtf_score": 0.0, "mtf_details": {"1m": "long"},
                "ai_probability": None, "model_version": None,
                "features": {"rsi_14": 55.0, "atr_14": 1.0}, "status": "open",
            }
        )  # fmt: skip
    return rows


def _timed_store(url: str, rows: list[dict[str, Any]], *, per_row: bool) -> dict[str, Any]:
    import pandas as pd
    from psycopg.rows import dict_row

    from signalengine.tasks.outcomes.signals import insert_signals

    ids = {str(r["id"]) for r in rows}
    with (
        psycopg.connect(url, autocommit=True) as listener,
        psycopg.connect(url, autocommit=True, row_factory=dict_row) as writer,
    ):
        listener.execute("LISTEN signals")
        frame = pd.DataFrame(rows)
        started = time.perf_counter()
        if per_row:  # the code before sql/011: one INSERT (and one NOTIFY) per signal
            columns = ", ".join(_BASE_COLUMNS)
            marks = ", ".join(["%s"] * len(_BASE_COLUMNS))
            with writer.transaction(), writer.cursor() as cur:
                for r in rows:
                    values = [
                        Jsonb(r[c]) if c in ("events", "mtf_details", "features") else r[c]
                        for c in _BASE_COLUMNS
                    ]
                    cur.execute(
                        f"INSERT INTO signals ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                        values,
                    )
        else:
            insert_signals(writer, frame)
        committed = time.perf_counter()
        seen: set[str] = set()
        notifications = 0
        for note in listener.notifies(timeout=10):
            notifications += 1
            data = json.loads(note.payload)
            seen.update(data.get("ids", [data.get("id")]))
            if ids <= seen:
                break
        received = time.perf_counter()
    return {
        "store_and_commit_ms": round((committed - started) * 1000, 1),
        "all_ids_at_listener_ms": round((received - started) * 1000, 1),
        "notifications": notifications,
        "complete": ids <= seen,
    }


def notify_path(url: str, n: int) -> dict[str, Any]:
    """`n` signals of one close stored and announced, before and after sql/011."""
    before_sql = _OLD_ROW_TRIGGER
    after_sql = (ROOT / "sql" / "011_signals_notify_batch.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(before_sql.encode())
    before = [_timed_store(url, _bench_rows(n, minute=m), per_row=True) for m in range(3)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(after_sql.encode())
        conn.execute("DROP FUNCTION IF EXISTS bench_notify_row()")
    after = [_timed_store(url, _bench_rows(n, minute=10 + m), per_row=False) for m in range(3)]
    best = min  # best of three: the machine is shared
    return {
        "signals": n,
        "before_per_row": {
            "store_and_commit_ms": best(r["store_and_commit_ms"] for r in before),
            "all_ids_at_listener_ms": best(r["all_ids_at_listener_ms"] for r in before),
            "notifications": before[0]["notifications"],
        },
        "after_per_statement": {
            "store_and_commit_ms": best(r["store_and_commit_ms"] for r in after),
            "all_ids_at_listener_ms": best(r["all_ids_at_listener_ms"] for r in after),
            "notifications": after[0]["notifications"],
        },
        "complete": all(r["complete"] for r in before + after),
    }


def inprocess_figure(symbols: int) -> dict[str, Any] | None:
    """H1's in-process `process_closes` bench, when it exists: its JSON, run apart."""
    script = ROOT / "bench" / "live_inprocess.py"
    if not script.exists():
        return None
    env = {**os.environ, **TELEMETRY_OFF}
    done = subprocess.run(
        [sys.executable, str(script), "--symbols", str(symbols)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr[-500:]}"}
    figure: dict[str, Any] = json.loads(lines[-1])
    return figure


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    symbols = symbol_names(args.symbols)
    token = secrets.token_urlsafe(16)
    ports = Ports()
    started = time.time()
    load_start = os.getloadavg()
    with ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-live-")))
        name = f"signalengine_bench_live_{os.getpid()}"
        url = stack.enter_context(database(args.server, name, keep=args.keep))
        phases: dict[str, float] = {}
        mark = time.time()
        prefect_api = args.prefect_api or stack.enter_context(prefect_server(ports.prefect))
        phases["prefect_s"], mark = time.time() - mark, time.time()
        env = {
            **os.environ,
            **TELEMETRY_OFF,
            **ENGINE_SETTINGS,
            "PREFECT_API_URL": prefect_api,
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "SIGNALENGINE_DATABASE_URL": url,
            "SIGNALENGINE_STATE_DIR": str(state),
            "SIGNALENGINE_EXCHANGE": EXCHANGE,
            "SIGNALENGINE_EXCHANGE_URL": f"http://127.0.0.1:{ports.sim}",
            "SIGNALENGINE_SYMBOLS": json.dumps(symbols),
            "SIGNALENGINE_SIM_SPEED": str(args.speed),
            "SIGNALENGINE_SIM_PORT": str(ports.sim),
            "SIGNALENGINE_API_PORT": str(ports.api),
            "SIGNALENGINE_API_TOKEN": token,
            "SIGNALENGINE_STREAM_METRICS_PORT": str(ports.metrics),
            "SIGNALENGINE_BACKFILL_DAYS": str(args.history_days),
            "SIGNALENGINE_BACKFILL_REQUESTS_PER_SECOND": "500",
            "SIGNALENGINE_WS_QUEUE_SIZE": str(max(1000, 4 * args.symbols)),
        }
        env.pop("PYTHONPATH", None)
        upgrade = subprocess.run(
            [sys.executable, "-m", "signalengine", "db", "upgrade"],
            env=env, cwd=state, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if upgrade.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {upgrade.stderr[-1500:]}")
        children = Children(state)
        stack.callback(children.stop_all)
        children.start("sim", ["sim", "--port", str(ports.sim), "--speed", str(args.speed),
                               "--symbols", ",".join(symbols)], env, state)  # fmt: skip
        base = f"http://127.0.0.1:{ports.sim}"
        wait_http(f"{base}/sim/status", children, seconds=60)
        children.start("api", ["api", "--host", "127.0.0.1", "--port", str(ports.api)], env, state)
        wait_http(f"http://127.0.0.1:{ports.api}/health", children, seconds=90)
        phases["db_sim_api_s"], mark = time.time() - mark, time.time()
        stream_pid = children.start("stream", ["stream"], env, state)
        clock = SimClock.read(base)
        result = asyncio.run(measure(args, url, symbols, token, ports, clock, children, stream_pid))
        result["stream_log_tail"] = None
        if result.get("error"):
            result["stream_log_tail"] = children.tail("stream")
        phases["measure_s"], mark = time.time() - mark, time.time()
        children.stop_all()
        phases["stop_s"], mark = time.time() - mark, time.time()
        if args.notify_signals:
            result["notify_path"] = notify_path(url, args.notify_signals)
        phases["notify_path_s"] = time.time() - mark
        result["phases"] = {k: round(v, 1) for k, v in phases.items()}
    if args.inprocess_symbols:
        result["inprocess"] = inprocess_figure(args.inprocess_symbols)
    load_end = os.getloadavg()
    result["machine"] = {
        "cpus": os.cpu_count(),
        "load_avg_1m_start": round(load_start[0], 2),
        "load_avg_1m_end": round(load_end[0], 2),
    }
    result["wall_seconds"] = round(time.time() - started, 1)
    return result


async def measure(
    args: argparse.Namespace,
    url: str,
    symbols: list[str],
    token: str,
    ports: Ports,
    clock: SimClock,
    children: Children,
    stream_pid: int,
) -> dict[str, Any]:
    metrics_url = f"http://127.0.0.1:{ports.metrics}/metrics"
    feed = FeedLog()
    connected = asyncio.Event()
    samples = Samples()
    warm_samples = Samples()
    stream = psutil.Process(stream_pid)
    client = asyncio.create_task(
        listen_feed(f"ws://127.0.0.1:{ports.api}/ws/feed", token, feed, connected)
    )
    sampler = asyncio.create_task(
        sample_forever(url, symbols, clock, metrics_url, stream, warm_samples)
    )
    stored_at: dict[int, float] = {}
    emitted_at: dict[int, float] = {}
    watchers = [
        asyncio.create_task(watch_stored(url, symbols, clock, stored_at)),
        asyncio.create_task(watch_exchange(f"ws://127.0.0.1:{ports.sim}", symbols[-1], emitted_at)),
    ]
    config = {
        "symbols": len(symbols),
        "speed": args.speed,
        "primary_timeframe": PRIMARY,
        "history_days": args.history_days,
        "engine": {k.removeprefix("SIGNALENGINE_").lower(): v for k, v in ENGINE_SETTINGS.items()},
        "duration_s": args.duration,
        "why": "low threshold, no MTF requirement, no cooldown: signals on most 1m closes",
    }
    try:
        await asyncio.wait_for(connected.wait(), 30)
        warm_started = time.time()
        first_close_at: float | None = None
        while True:  # warm: a close evaluated and the newest bars near the exchange clock
            children.check()
            await asyncio.sleep(1.0)
            try:
                now = await asyncio.to_thread(scrape, metrics_url)
            except OSError:
                continue
            closes = sum(now.get(f"{STAGE_METRIC}_count", {}).values())
            lag = warm_samples.lag_sim_s[-1] if warm_samples.lag_sim_s else None
            if closes and first_close_at is None:
                first_close_at = time.time()
            behind = _one(now, "event_queue_depth") or 0.0  # minutes awaiting evaluation
            if closes and lag is not None and lag <= PRIMARY_MS / 1000 and behind <= 1:
                break
            # a stream that never gets that close is measured anyway (kept_up says so)
            if first_close_at is not None and time.time() - first_close_at > args.settle:
                break
            if time.time() - warm_started > args.warmup_timeout:
                return {"config": config, "error": f"not warm after {args.warmup_timeout} s",
                        "lag_sim_s": lag, "closes": closes}  # fmt: skip
        warmup_s = time.time() - warm_started
        sampler.cancel()
        sampler = asyncio.create_task(
            sample_forever(url, symbols, clock, metrics_url, stream, samples)
        )
        before = await asyncio.to_thread(scrape, metrics_url)
        t0 = time.time()
        await asyncio.sleep(args.duration)
        t1 = time.time()
        after = await asyncio.to_thread(scrape, metrics_url)
        children.check()
        rss_peak_window = max(samples.rss, default=0)
        hwm = _vm_hwm(stream_pid)
        await asyncio.sleep(min(10.0, 3 + 2 * PRIMARY_MS / 1000 / args.speed))  # stragglers
    finally:
        for task in (client, sampler, *watchers):
            task.cancel()
        await asyncio.gather(client, sampler, *watchers, return_exceptions=True)

    in_window = []
    store_to_client = []
    for message in feed.signals:
        close_wall = clock.wall_at(message.ts.timestamp() * 1000 + PRIMARY_MS)
        if t0 <= close_wall <= t1:
            in_window.append(message.wall - close_wall)
            store_to_client.append(message.wall - message.created_at.timestamp())
    first_close = math.ceil(clock.sim_at(t0) / PRIMARY_MS) * PRIMARY_MS
    last_close = math.floor(clock.sim_at(t1) / PRIMARY_MS) * PRIMARY_MS
    expected_closes = max(0, (last_close - first_close) // PRIMARY_MS + 1)
    split = stage_split(before, after)
    legs = close_legs(feed, clock, t0, t1, stored_at=stored_at, emitted_at=emitted_at)
    evaluated = split.get("compute", {}).get("closes", 0)
    max_lag = max(samples.lag_sim_s, default=None)
    backlog_end = samples.queue_depth[-1] if samples.queue_depth else None
    kept_up = (
        max_lag is not None
        and max_lag < 60
        and evaluated >= expected_closes - 1
        and (backlog_end or 0.0) <= 1
    )
    closes_with_signals = {
        m.ts
        for m in feed.signals
        if t0 <= clock.wall_at(m.ts.timestamp() * 1000 + PRIMARY_MS) <= t1
    }
    return {
        "config": config,
        "warmup_s": round(warmup_s, 1),
        "window_s": round(t1 - t0, 1),
        "messages": len(in_window),
        "messages_total": len(feed.signals),
        "closes_expected": expected_closes,
        "closes_evaluated": evaluated,
        "closes_with_signals": len(closes_with_signals),
        "latency_ms": {
            "p50": _ms(percentile(in_window, 50)),
            "p99": _ms(percentile(in_window, 99)),
            "max": _ms(max(in_window, default=None)),
            "min": _ms(min(in_window, default=None)),
        },
        "store_to_client_ms": {
            "p50": _ms(percentile(store_to_client, 50)),
            "p99": _ms(percentile(store_to_client, 99)),
        },
        "split": split,
        "legs_ms": legs,
        "stream_rss_mb": {
            "peak_vm_hwm": round(hwm / 2**20) if hwm else None,
            "peak_sampled_in_window": round(rss_peak_window / 2**20),
        },
        "ingest_lag": {
            "max_sim_s": None if max_lag is None else round(max_lag, 1),
            "max_real_s": None if max_lag is None else round(max_lag / args.speed, 2),
            "samples": len(samples.lag_sim_s),
            "stream_gauge_max_s": round(max(samples.stream_lag_s, default=0.0), 1),
            "event_queue_depth_max": max(samples.queue_depth, default=None),
            "event_queue_depth_end": backlog_end,
        },
        "kept_up": kept_up,
        "feed_closes": feed.closes,
        "load_avg_1m_max": round(max(samples.load, default=0.0), 2),
        "clock_rtt_ms": round(clock.rtt * 1000, 2),
    }


def close_legs(
    feed: FeedLog,
    clock: SimClock,
    t0: float,
    t1: float,
    *,
    stored_at: dict[int, float],
    emitted_at: dict[int, float],
) -> dict[str, Any]:
    """Where the time of one close goes, from the bar close (wall), per close in the
    window: the simulator's closed kline at a WebSocket client (one symbol), every
    symbol's bar stored, the storing transaction of its first signal, its first and
    last signal at the feed client. p50 / max over the closes, ms."""
    per_close: dict[int, list[Received]] = {}
    for message in feed.signals:
        per_close.setdefault(int(message.ts.timestamp() * 1000), []).append(message)
    legs: dict[str, list[float]] = {
        k: [] for k in ("exchange_ws", "all_stored", "signal_txn", "first_client", "last_client")
    }
    for opened, messages in per_close.items():
        close = clock.wall_at(opened + PRIMARY_MS)
        if not t0 <= close <= t1:
            continue
        if opened in emitted_at:
            legs["exchange_ws"].append(emitted_at[opened] - close)
        if opened in stored_at:
            legs["all_stored"].append(stored_at[opened] - close)
        legs["signal_txn"].append(min(m.created_at.timestamp() for m in messages) - close)
        legs["first_client"].append(min(m.wall for m in messages) - close)
        legs["last_client"].append(max(m.wall for m in messages) - close)
    return {
        name: {"p50": _ms(percentile(v, 50)), "max": _ms(max(v, default=None)), "n": len(v)}
        for name, v in legs.items()
    }


def _vm_hwm(pid: int) -> int | None:
    """Peak resident set of a process (VmHWM), bytes; None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20, help="e.g. 50, 200, 500, 1000")
    parser.add_argument("--speed", type=float, default=10.0, help="simulated s per real s")
    parser.add_argument("--duration", type=float, default=60.0, help="measured real seconds")
    parser.add_argument("--history-days", type=float, default=1.0, help="stream cold start")
    parser.add_argument("--warmup-timeout", type=float, default=900.0)
    parser.add_argument(
        "--settle", type=float, default=180.0, help="real s after the first close at most"
    )
    parser.add_argument("--notify-signals", type=int, default=500, help="0: skip notify_path")
    parser.add_argument("--inprocess-symbols", type=int, default=500, help="0: skip")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--prefect-api", default="", help="a running Prefect API; else one")
    args = parser.parse_args(argv)
    if args.symbols < 1 or args.speed <= 0 or args.duration <= 0:
        parser.error("--symbols, --speed and --duration must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = run(args)
    except (RuntimeError, OSError, psycopg.Error) as error:  # a part failed: say which, once
        print(json.dumps({"error": str(error)[-3000:]}))
        raise SystemExit(1) from None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
