"""Sends the stored webhook deliveries (talk.webhooks is the outbox): signed POSTs, retries with backoff, a log.

One worker task reads what is due from the database, so a delivery stored before a restart is sent after it. Each
delivery it takes is leased (its next attempt moved past the attempt's timeout) in a committed transaction first: a
crash mid-attempt means one more attempt later, never a lost one, and two processes never send the same attempt.
At most `concurrency` deliveries are in flight, at most one per webhook: a slow or dead receiver holds one slot
while every other webhook keeps its pace. Every attempt's outcome is recorded; any fault in one delivery is that
delivery's error, never the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from talk.db import SESSIONMAKER_KEY
from talk.models import Webhook, WebhookDelivery
from talk.settings import SETTINGS_KEY
from talk.webhooks import (
    DELIVERED, DELIVERY_HEADER, EVENT_HEADER, FAILED, MAX_ERROR, PENDING, SIGNATURE_HEADER, TIMESTAMP_HEADER,
    prune_deliveries, sign, utcnow,
)

log = logging.getLogger(__name__)

# Seconds to wait after the 1st, 2nd, … failed attempt; after the last one the delivery is failed (7 attempts over
# about 8 h 36 min).
DEFAULT_SCHEDULE = (10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0)
USER_AGENT = "Talk-Webhooks/1"
LEASE_MARGIN = 30.0  # seconds beyond the attempt's timeout before a taken delivery counts as abandoned
PRUNE_EVERY = 6 * 3600.0


@dataclass(frozen=True)
class DispatchOptions:
    """How deliveries are sent; put one under WEBHOOK_OPTIONS_KEY before the app starts to change them (tests)."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    timeout: float = 10.0  # one attempt: connect, send, the receiver's answer
    concurrency: int = 8  # deliveries in flight at once (at most one per webhook)
    poll_interval: float = 30.0  # longest pause between looks at the table (deliveries stored by another process)
    lease_margin: float = LEASE_MARGIN


Enqueue = Callable[..., Awaitable[int]]


class WebhookDispatcher:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], options: DispatchOptions | None = None,
                 keep: timedelta | None = None) -> None:
        self._sessionmaker = sessionmaker
        self.options = options or DispatchOptions()
        self._keep = keep  # how long the log of finished deliveries is kept (None: for ever)
        self._http: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task] = {}  # webhook id -> the one attempt in flight for it
        self._publishing: set[asyncio.Task] = set()
        self._next_prune = 0.0
        self._stopping = False

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout), headers={"User-Agent": USER_AGENT},
            connector=aiohttp.TCPConnector(limit=self.options.concurrency), cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False)
        self._worker = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Events still being stored are stored; attempts in flight get a moment, then stay pending (leased) and
        are sent after the next start."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
        if self._worker is not None:
            # Let the worker finish what it is doing with the database (cancelling a query mid-way makes the
            # connection pool log an error), but not for ever.
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._worker), 5.0)
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        attempts = list(self._inflight.values())
        if attempts:
            _done, unfinished = await asyncio.wait(attempts, timeout=1.0)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # ----- publishing -----

    def wake(self) -> None:
        """New deliveries were committed: look now rather than at the next poll."""
        self._wake.set()

    async def publish(self, enqueue: Enqueue, *args: Any, **kwargs: Any) -> int:
        """Run one of talk.webhooks' enqueue functions in its own transaction, then send what it stored."""
        async with self._sessionmaker() as db, db.begin():
            new = await enqueue(db, *args, **kwargs)
        if new:
            self.wake()
        return new

    def publish_soon(self, enqueue: Enqueue, *args: Any, **kwargs: Any) -> None:
        """`publish` in the background, for synchronous listeners (the switchboard's call_changed); tracked, so
        stop() waits for it, and its failure is logged."""
        task = asyncio.create_task(self.publish(enqueue, *args, **kwargs))
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not store a webhook event", exc_info=task.exception())

    # ----- the worker -----

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before reading: a wake during the read is not lost
            try:
                await self._prune_when_due()
                pause = await self._dispatch_due()
            except Exception:
                log.exception("webhooks: could not read the due deliveries")
                pause = self.options.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _dispatch_due(self) -> float:
        """Start the due deliveries there are slots for; returns how long to sleep unless woken."""
        now = utcnow()
        free = self.options.concurrency - len(self._inflight)
        taken: list[tuple[int, int]] = []
        if free > 0:
            async with self._sessionmaker() as db, db.begin():
                due = self._waiting(select(WebhookDelivery.webhook_id, func.min(WebhookDelivery.id)))
                due = (due.where(WebhookDelivery.next_attempt_at <= now).group_by(WebhookDelivery.webhook_id)
                       .order_by(func.min(WebhookDelivery.next_attempt_at)).limit(free))
                lease = now + timedelta(seconds=self.options.timeout + self.options.lease_margin)
                for webhook_id, delivery_id in (await db.execute(due)).all():
                    claimed = await db.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
                               WebhookDelivery.next_attempt_at <= now)
                        .values(next_attempt_at=lease))
                    if claimed.rowcount == 1:  # 0: another process took it first
                        taken.append((webhook_id, delivery_id))
        if self._stopping:
            return 0  # what was just leased is sent after the next start
        for webhook_id, delivery_id in taken:  # committed: the leases hold
            task = asyncio.create_task(self._deliver(delivery_id), name=f"webhook-delivery-{delivery_id}")
            self._inflight[webhook_id] = task
            task.add_done_callback(partial(self._attempt_done, webhook_id))
        if len(self._inflight) >= self.options.concurrency:
            return self.options.poll_interval  # a finishing attempt wakes the worker
        async with self._sessionmaker() as db:
            next_due = await db.scalar(self._waiting(select(func.min(WebhookDelivery.next_attempt_at))))
        if next_due is None:
            return self.options.poll_interval
        return min(max((next_due - utcnow()).total_seconds(), 0.01), self.options.poll_interval)

    def _waiting(self, query):
        """Pending deliveries of active webhooks that have no attempt in flight here."""
        query = (query.join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                 .where(WebhookDelivery.status == PENDING, Webhook.active.is_(True)))
        if self._inflight:
            query = query.where(WebhookDelivery.webhook_id.not_in(list(self._inflight)))
        return query

    def _attempt_done(self, webhook_id: int, task: asyncio.Task) -> None:
        self._inflight.pop(webhook_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())
        self.wake()

    async def _deliver(self, delivery_id: int) -> None:
        async with self._sessionmaker() as db:
            row = (await db.execute(
                select(WebhookDelivery.payload, WebhookDelivery.event_id, WebhookDelivery.event_type,
                       WebhookDelivery.webhook_id, Webhook.url, Webhook.secret)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id).where(WebhookDelivery.id == delivery_id)
            )).first()
        if row is None:
            return  # the webhook was removed meanwhile
        try:
            body = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False).encode()
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(row.secret, timestamp, body),
                       TIMESTAMP_HEADER: timestamp, EVENT_HEADER: row.event_type, DELIVERY_HEADER: row.event_id}
            code, error = await self._post(row.url, body, headers)
        except Exception as exc:  # a fault of ours in this delivery is its error, not the worker's
            log.exception("webhook delivery %s failed", delivery_id)
            code, error = None, f"internal error: {type(exc).__name__}"
        if error is not None:
            log.warning("webhook %s: delivery %s (%s) failed: %s", row.webhook_id, delivery_id, row.event_type, error)
        await self._record(delivery_id, code, error)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        assert self._http is not None
        try:
            async with self._http.post(url, data=body, headers=headers, allow_redirects=False) as response:
                code, reason = response.status, response.reason or ""
        except TimeoutError:
            return None, f"no answer within {self.options.timeout:g} s"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        if 200 <= code < 300:
            return code, None
        error = f"HTTP {code} {reason}".strip()
        if 300 <= code < 400:
            error += " (redirects are not followed)"
        return code, error[:MAX_ERROR]

    async def _record(self, delivery_id: int, code: int | None, error: str | None) -> None:
        """The attempt's outcome. `last_error` keeps the latest failure even after a later success."""
        now = utcnow()
        schedule = self.options.schedule
        async with self._sessionmaker() as db, db.begin():
            delivery = await db.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.status != PENDING:
                return
            delivery.attempts += 1
            delivery.last_status_code = code
            if error is None:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = DELIVERED, now, None
                return
            delivery.last_error = error[:MAX_ERROR]
            if delivery.attempts > len(schedule):
                delivery.status, delivery.next_attempt_at = FAILED, None
            else:
                delivery.next_attempt_at = now + timedelta(seconds=schedule[delivery.attempts - 1])

    async def _prune_when_due(self) -> None:
        if self._keep is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY
        async with self._sessionmaker() as db, db.begin():
            removed = await prune_deliveries(db, utcnow() - self._keep)
        if removed:
            log.info("webhooks: removed %d deliveries older than %s from the log", removed, self._keep)


WEBHOOKS_KEY = web.AppKey("webhooks", WebhookDispatcher)
WEBHOOK_OPTIONS_KEY = web.AppKey("webhook_options", DispatchOptions)


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    dispatcher = WebhookDispatcher(app[SESSIONMAKER_KEY], app.get(WEBHOOK_OPTIONS_KEY),
                                   keep=timedelta(days=settings.retention_days))
    await dispatcher.start()
    app[WEBHOOKS_KEY] = dispatcher
    yield
    await dispatcher.stop()


def setup_webhooks(app: web.Application) -> None:
    """Needs the database context before it; put it before the switchboard's, so it outlives it (calls still
    ending at shutdown are published)."""
    app.cleanup_ctx.append(webhooks_ctx)
