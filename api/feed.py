"""The live signal feed of one API replica: LISTEN, fetch once, fan out to WebSocket clients.

Each replica holds one dedicated connection LISTENing on the `signals` channel (the
trigger in sql/011 NOTIFYs once per insert statement, with the new ids in insertion
order). Notified ids of the live run are batched, the rows fetched once per replica,
serialized once, and put on every matching client's bounded queue. A client whose queue
is full is too slow: its queue is dropped (counted in `ws_messages_dropped_total`) and it
gets a close frame with code 1013 whose reason says how many messages it lost and the
`since` to reconnect with; `since` replays everything stored after it, oldest first, in
pages. The LISTEN connection reconnects with backoff and, after a reconnect, catches up
on signals stored while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketState

from signalengine.api.cache import VersionedCache
from signalengine.api.db.performance import PerformanceFilter
from signalengine.api.db.signals import (
    count_signals,
    get_signals_by_ids,
    signals_created_since,
    signals_page_since,
)
from signalengine.api.feed_client import FeedClient, QueueItem, Subscription
from signalengine.api.metrics import ApiMetrics, system_figures
from signalengine.api.schemas import Signal
from signalengine.api.stats import performance_stats
from signalengine.api.ws_schemas import (
    CLIENT_MESSAGE,
    KEEPALIVE_TEXT,
    ConnectedData,
    ConnectedMessage,
    SignalMessage,
    StatusData,
    StatusMessage,
    SubscribeMessage,
)
from signalengine.core.vocabulary import LIVE_RUN

logger = logging.getLogger(__name__)

CHANNEL = "signals"
LISTEN_APPLICATION_NAME = "signalengine-api-listen"
FETCH_BATCH = 200
REPLAY_LIMIT = 1000
SEEN_IDS = 20_000
RECONNECT_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
# How often an idle LISTEN connection is probed, so that a silently dead one is noticed.
LISTEN_PROBE_SECONDS = 30.0
# Catch-up after a reconnect looks this far behind the newest signal seen: created_at is
# the inserting transaction's start, so a long transaction can commit an older value late.
CATCH_UP_MARGIN = timedelta(seconds=60)
CLOSE_TOO_SLOW = 1013
CLOSE_TIMEOUT = 10.0
# A slow client still reads: give its close frame time to get through the (small) buffers.
SLOW_CLOSE_TIMEOUT = 30.0
REPLAY_MAX = 100_000  # signals one `since` replays at most


class Feed:
    """The replica-wide fan-out; `start()` in the app lifespan, `stop()` at shutdown."""

    def __init__(
        self,
        *,
        url: str,
        pool: AsyncConnectionPool[Any],
        metrics: ApiMetrics,
        cache: VersionedCache,
        version: str,
        queue_size: int,
        status_seconds: float,
        keepalive_seconds: float,
    ) -> None:
        self._url = url
        self._pool = pool
        self._metrics = metrics
        self._cache = cache
        self._version = version
        self._queue_size = queue_size
        self._status_seconds = status_seconds
        self._keepalive_seconds = keepalive_seconds
        self.clients: set[FeedClient] = set()
        self.listening = asyncio.Event()
        self._pending: asyncio.Queue[UUID] = asyncio.Queue()
        self._seen: OrderedDict[UUID, None] = OrderedDict()
        self._newest_created_at: datetime | None = None
        self._last_status: tuple[float, str] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening, dispatching and the periodic status and keepalive messages."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="feed-listen"),
            asyncio.create_task(self._dispatch(), name="feed-dispatch"),
            asyncio.create_task(
                self._every(self._status_seconds, self._broadcast_status), name="feed-status"
            ),
            asyncio.create_task(
                self._every(self._keepalive_seconds, self._broadcast_keepalive),
                name="feed-keepalive",
            ),
        ]

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- LISTEN side -------------------------------------------------------------------

    async def _listen(self) -> None:
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, application_name=LISTEN_APPLICATION_NAME
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    attempt = 0
                    await self._catch_up()
                    while True:
                        async for notify in conn.notifies(timeout=LISTEN_PROBE_SECONDS):
                            self._on_notify(notify.payload)
                        await conn.execute("SELECT 1")
            except (psycopg.Error, OSError, PoolTimeout) as exc:
                logger.warning("LISTEN %s failed: %s", CHANNEL, exc)
            except Exception:
                logger.exception("LISTEN %s crashed", CHANNEL)
            finally:
                self.listening.clear()
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            attempt += 1
            logger.info("reconnecting LISTEN %s in %.1fs", CHANNEL, delay)
            await asyncio.sleep(delay)

    def _on_notify(self, payload: str) -> None:
        """Queue the ids of one notification: `{"run_id", "ids": [...]}` per insert
        statement (sql/011), or the older one-row `{"run_id", "id"}`."""
        try:
            data = json.loads(payload)
            if data.get("run_id") != LIVE_RUN:
                return
            raw = data["ids"] if "ids" in data else [data["id"]]
            ids = [UUID(str(value)) for value in raw]
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring malformed %s notification: %.200s", CHANNEL, payload)
            return
        for signal_id in ids:
            self._pending.put_nowait(signal_id)

    async def _catch_up(self) -> None:
        """After a reconnect, queue live signals stored while nobody was listening."""
        if self._newest_created_at is None:
            return
        async with self._pool.connection() as conn:
            rows = await signals_created_since(
                conn=conn, since=self._newest_created_at - CATCH_UP_MARGIN, limit=SEEN_IDS
            )
        for row in rows:
            if row["id"] not in self._seen:
                self._pending.put_nowait(row["id"])

    async def _dispatch(self) -> None:
        while True:
            ids = [await self._pending.get()]
            while len(ids) < FETCH_BATCH and not self._pending.empty():
                ids.append(self._pending.get_nowait())
            fresh = list(dict.fromkeys(i for i in ids if i not in self._seen))
            if not fresh:
                continue
            try:
                async with self._pool.connection() as conn:
                    rows = await get_signals_by_ids(conn=conn, ids=fresh)
            except (psycopg.Error, PoolTimeout) as exc:
                logger.error("could not fetch %d notified signals: %s", len(fresh), exc)
                continue
            for signal_id in fresh:
                row = rows.get(signal_id)
                if row is None:
                    continue
                try:
                    self._publish(Signal.model_validate(row))
                except ValidationError as exc:  # a malformed row must not stop the feed
                    logger.error("cannot publish signal %s: %s", signal_id, exc)
                # Let client senders run between messages, so a burst does not fill the
                # queues of clients that keep up.
                await asyncio.sleep(0)

    def _publish(self, signal: Signal) -> None:
        self._seen[signal.id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        if self._newest_created_at is None or signal.created_at > self._newest_created_at:
            self._newest_created_at = signal.created_at
        self._metrics.observe_signal(signal)
        text = SignalMessage(data=signal).model_dump_json()
        for client in list(self.clients):
            if client.subscription.matches(signal):
                self._offer(client, (signal.id, text, signal.created_at))

    def _offer(self, client: FeedClient, item: QueueItem) -> None:
        was_slow = client.too_slow.is_set()
        if not client.offer(item) and not was_slow:
            self._metrics.ws_dropped.inc()
            logger.warning("closing a WebSocket client whose queue is full (too slow)")

    # -- periodic messages -------------------------------------------------------------

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:
                logger.exception("periodic feed message failed")

    async def _broadcast_status(self) -> None:
        if not self.clients:
            return
        text = (await self.status()).model_dump_json()
        self._last_status = (asyncio.get_running_loop().time(), text)
        for client in list(self.clients):
            self._offer(client, (None, text, None))

    async def _broadcast_keepalive(self) -> None:
        for client in list(self.clients):
            self._offer(client, (None, KEEPALIVE_TEXT, None))

    async def status(self) -> StatusMessage:
        """Live figures for the status message; database figures are null if it is down."""
        figures: dict[str, float | int | None] = {
            "total_signals": None,
            "settled_signals": None,
            "win_rate": None,
            "avg_return_pct": None,
            "total_return_pct": None,
            "sharpe": None,
        }
        try:
            async with self._pool.connection() as conn:
                stats = await performance_stats(
                    conn=conn, cache=self._cache, where=PerformanceFilter(run_id=LIVE_RUN)
                )
                figures["total_signals"] = await count_signals(conn=conn, run_id=LIVE_RUN)
            figures.update(
                settled_signals=stats.count,
                win_rate=stats.win_rate,
                avg_return_pct=stats.avg_return_pct,
                total_return_pct=stats.total_return_pct,
                sharpe=stats.sharpe,
            )
        except (psycopg.Error, PoolTimeout) as exc:
            logger.warning("status without database figures: %s", exc)
        figures.update(system_figures(self._metrics.started_at))
        figures["signals_received"] = int(self._metrics.total("signals_generated_total"))
        return StatusMessage(data=StatusData(metrics=figures, connected_clients=len(self.clients)))

    # -- one client --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self, websocket: WebSocket) -> AsyncIterator[FeedClient]:
        client = FeedClient(websocket, queue_size=self._queue_size)
        self.clients.add(client)
        self._metrics.ws_connected.set(len(self.clients))
        try:
            yield client
        finally:
            self.clients.discard(client)
            self._metrics.ws_connected.set(len(self.clients))
            if websocket.application_state == WebSocketState.CONNECTED:
                code, reason, wait = 1000, "", CLOSE_TIMEOUT
                if client.too_slow.is_set():
                    self._metrics.ws_messages_dropped.inc(client.drop_queued())
                    code, reason, wait = CLOSE_TOO_SLOW, client.close_reason(), SLOW_CLOSE_TIMEOUT
                # A client that stopped reading may never let the close frame through.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(websocket.close(code=code, reason=reason), wait)

    async def serve(self, websocket: WebSocket, *, since: datetime | None) -> None:
        """Talk to one accepted client until it leaves or falls behind; always cleans up."""
        async with self._session(websocket) as client:
            connected = ConnectedMessage(
                data=ConnectedData(
                    message="connected to the SignalEngine feed", version=self._version
                )
            )
            await self._send_now(client, connected.model_dump_json())
            if since is not None:
                await self._replay(client, since)
            # The first status is queued, not awaited: live signals must flow meanwhile.
            greeting = asyncio.create_task(self._greet(client))
            tasks = [
                asyncio.create_task(self._read(client)),
                asyncio.create_task(self._send(client)),
                asyncio.create_task(client.too_slow.wait()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in [greeting, *tasks]:
                    task.cancel()
                await asyncio.gather(greeting, *tasks, return_exceptions=True)

    async def _greet(self, client: FeedClient) -> None:
        """Queue a status for a new client; a recent broadcast one is reused, so that a
        wave of reconnecting clients does not query the database once each."""
        now = asyncio.get_running_loop().time()
        if self._last_status is not None and now - self._last_status[0] < self._status_seconds:
            text = self._last_status[1]
        else:
            text = (await self.status()).model_dump_json()
            self._last_status = (now, text)
        self._offer(client, (None, text, None))

    async def _send_now(self, client: FeedClient, text: str) -> None:
        await client.websocket.send_text(text)
        self._metrics.ws_messages_sent.inc()

    async def _replay(self, client: FeedClient, since: datetime) -> None:
        """Send every live signal stored after `since` (oldest first, in pages, at most
        REPLAY_MAX) before the live ones, so a reconnecting client misses nothing."""
        after: tuple[datetime, UUID] | None = None
        sent = 0
        while sent < REPLAY_MAX:
            async with self._pool.connection() as conn:
                rows = await signals_page_since(
                    conn=conn, since=since, after=after, limit=REPLAY_LIMIT
                )
            for row in rows:
                try:
                    signal = Signal.model_validate(row)
                except ValidationError as exc:
                    logger.error("cannot replay signal %s: %s", row.get("id"), exc)
                    continue
                client.replayed.add(signal.id)
                await self._send_now(client, SignalMessage(data=signal).model_dump_json())
            sent += len(rows)
            if len(rows) < REPLAY_LIMIT:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])

    async def _send(self, client: FeedClient) -> None:
        while True:
            signal_id, text, _ = await client.queue.get()
            if signal_id is not None and signal_id in client.replayed:
                client.replayed.discard(signal_id)
                continue
            try:
                await self._send_now(client, text)
            except Exception as exc:  # the peer went away mid-send
                logger.debug("WebSocket send failed: %s", exc)
                return

    async def _read(self, client: FeedClient) -> None:
        while True:
            message = await client.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            try:
                parsed = CLIENT_MESSAGE.validate_json(text)
            except ValidationError as exc:
                logger.info(
                    "dropping invalid client message %.200r: %s", text, exc.errors()[0]["msg"]
                )
                continue
            if isinstance(parsed, SubscribeMessage):
                client.subscription = Subscription.from_message(parsed)
            else:
                self._offer(client, (None, KEEPALIVE_TEXT, None))
