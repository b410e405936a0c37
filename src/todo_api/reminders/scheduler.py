"""The reminder scheduler: fires due reminders and sends what they owe, exactly once, with any number of instances.

Two steps, each in batches, each claiming its rows with `FOR UPDATE SKIP LOCKED` (on SQLite, whose transactions
are one at a time, the same statements without it), and never a transaction open across network I/O:

1. **Fire** (`fire_due`): in one transaction, lock a batch of due `reminder_jobs` with their tasks, and for each:
   set the reminder's `fired_at` in `tasks.reminders` (the triggers delete the job, and the task's `task.updated`
   event is written), add the notification to the in-app feed (its trigger writes the `reminder` event), and queue
   a delivery for email and for each push subscription, as the user's `notification_channels` say. A reminder more
   than REMINDER_MAX_LATENESS late (no instance ran at the time) is dropped, not sent.
2. **Send** (`send_due`): claim a batch of deliveries (a lease of REMINDER_CLAIM_SECONDS, committed), send them
   on this thread's event loop (up to REMINDER_SEND_CONCURRENCY at once), then record each outcome in one
   transaction: sent (deleted), retry (its next attempt after
   REMINDER_RETRY_SECONDS, doubling), failed (deleted, after REMINDER_MAX_ATTEMPTS or past the lateness limit), or
   gone (the push service answered 404 or 410: the subscription is deleted). An instance that dies while sending
   leaves its claims to expire; one that is told to stop finishes the sends under way and releases the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import smtplib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp
import anyio.to_thread
from pydantic_core import to_json
from sqlalchemy import (
    Connection,
    Integer,
    Row,
    String,
    Text,
    bindparam,
    cast,
    column,
    delete,
    insert,
    literal,
    or_,
    select,
    update,
    values,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo_api import mail
from todo_api.auth.models import User
from todo_api.config import Settings
from todo_api.db import Database, UTCDateTime, changed, table, utcnow
from todo_api.errors import is_database_unavailable
from todo_api.metrics import Metrics, get_metrics
from todo_api.reminders.models import Delivery, Notification, PushSubscription, ReminderJob
from todo_api.reminders.push import EndpointRefused, PushSender, PushSubscriptionKeys
from todo_api.tasks.models import Task
from todo_api.tasks.reminders import fired

logger = logging.getLogger(__name__)

JOBS, TASKS, USERS = table(ReminderJob), table(Task), table(User)
NOTIFICATIONS, DELIVERIES, SUBSCRIPTIONS = table(Notification), table(Delivery), table(PushSubscription)
_NOW = bindparam("now", type_=UTCDateTime())
_CHANNEL = bindparam("channel", type_=String())
_ZERO = literal(0, Integer())
MAX_RETRY_SECONDS = 3600
MAIL_THREADS = 2
GIVE_WAY_SECONDS = 0.005
GIVE_WAY_STEP = 0.0005
MAX_PAUSE_SECONDS = 1.0
REST_PER_CPU = 2
MIN_IN_FLIGHT = 2
ROUND_TRIP_START = 1.0
ROUND_TRIP_DRIFT = 1.001

DUE_JOBS = (
    select(
        JOBS.c.task_id,
        JOBS.c.reminder_id,
        JOBS.c.user_id,
        JOBS.c.fire_at,
        TASKS.c.title,
        TASKS.c.due_date,
        cast(TASKS.c.reminders, Text).label("reminders"),
        USERS.c.email,
        cast(USERS.c.notification_channels, Text).label("channels"),
    )
    .join(TASKS, TASKS.c.id == JOBS.c.task_id)
    .join(USERS, USERS.c.id == JOBS.c.user_id)
    .where(JOBS.c.fire_at <= _NOW)
    .order_by(JOBS.c.fire_at)
    .limit(bindparam("limit"))
    .with_for_update(of=(JOBS, TASKS), skip_locked=True)
)
DROP_JOB = delete(JOBS).where(JOBS.c.task_id == bindparam("task_id"), JOBS.c.reminder_id == bindparam("reminder_id"))


SET_FIRED = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("task_id"))
    .values(
        reminders=bindparam("new_reminders", type_=TASKS.c.reminders.type), version=TASKS.c.version + 1, updated_at=_NOW
    )
)


def _set_fired(conn: Connection, updates: list[tuple[int, list[Any]]], now: datetime) -> None:
    """Give each task its reminders (with `fired_at` set), version + 1. On PostgreSQL in one UPDATE for the batch,
    so its statement-level triggers run once (the events' counter bumped once a user), not once a task; SQLite (no
    column names for a VALUES list, row-level triggers) takes them one by one."""
    if conn.dialect.name != "postgresql":
        conn.execute(SET_FIRED, [{"task_id": task_id, "new_reminders": new, "now": now} for task_id, new in updates])
        return
    fired_rows = values(
        column("task_id", TASKS.c.id.type), column("new_reminders", TASKS.c.reminders.type), name="fired_rows"
    ).data(updates)
    statement = (
        update(TASKS)
        .where(TASKS.c.id == fired_rows.c.task_id)
        .values(
            reminders=cast(fired_rows.c.new_reminders, TASKS.c.reminders.type),  # JSON text in VALUES, for jsonb
            version=TASKS.c.version + 1,
            updated_at=_NOW,
        )
    )
    conn.execute(statement, {"now": now})


_NOTIFICATION_VALUES = ("user_id", "type", "task_id", "reminder_id", "title", "due_date", "fire_at", "created_at")
QUEUE_EMAIL = insert(DELIVERIES).from_select(
    ["notification_id", "user_id", "channel", "fire_at", "attempts", "next_attempt_at"],
    select(NOTIFICATIONS.c.id, NOTIFICATIONS.c.user_id, _CHANNEL, NOTIFICATIONS.c.fire_at, _ZERO, _NOW).where(
        NOTIFICATIONS.c.id.in_(bindparam("ids", expanding=True))
    ),
)
QUEUE_PUSH = insert(DELIVERIES).from_select(
    ["notification_id", "user_id", "channel", "subscription_id", "fire_at", "attempts", "next_attempt_at"],
    select(
        NOTIFICATIONS.c.id,
        NOTIFICATIONS.c.user_id,
        _CHANNEL,
        SUBSCRIPTIONS.c.id,
        NOTIFICATIONS.c.fire_at,
        _ZERO,
        _NOW,
    )
    .join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.user_id == NOTIFICATIONS.c.user_id)
    .where(NOTIFICATIONS.c.id.in_(bindparam("ids", expanding=True))),
)

_CLAIMABLE = (
    select(DELIVERIES.c.id)
    .where(
        DELIVERIES.c.next_attempt_at <= _NOW,
        or_(DELIVERIES.c.claimed_until.is_(None), DELIVERIES.c.claimed_until <= _NOW),
    )
    .order_by(DELIVERIES.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
CLAIM = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id.in_(_CLAIMABLE.scalar_subquery()))
    .values(claimed_until=bindparam("until", type_=UTCDateTime()), attempts=DELIVERIES.c.attempts + 1)
    .returning(DELIVERIES.c.id)
)
CLAIMED = (
    select(
        DELIVERIES.c.id,
        DELIVERIES.c.channel,
        DELIVERIES.c.attempts,
        DELIVERIES.c.fire_at,
        DELIVERIES.c.subscription_id,
        NOTIFICATIONS.c.task_id,
        NOTIFICATIONS.c.title,
        NOTIFICATIONS.c.due_date,
        USERS.c.email,
        SUBSCRIPTIONS.c.endpoint,
        SUBSCRIPTIONS.c.p256dh,
        SUBSCRIPTIONS.c.auth,
    )
    .join(NOTIFICATIONS, NOTIFICATIONS.c.id == DELIVERIES.c.notification_id)
    .join(USERS, USERS.c.id == DELIVERIES.c.user_id)
    .outerjoin(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == DELIVERIES.c.subscription_id)
    .where(DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
)
DONE = delete(DELIVERIES).where(DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
GONE = delete(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id.in_(bindparam("ids", expanding=True)))
RETRY = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("delivery_id"))
    .values(claimed_until=None, next_attempt_at=bindparam("next_attempt_at", type_=UTCDateTime()))
)
RELEASE = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(claimed_until=None, attempts=DELIVERIES.c.attempts - 1)
)

Outcome = Literal["sent", "retry", "failed", "gone", "refused"]


def _insert_notifications(conn: Connection, values: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """The notifications, each once (a firing already recorded is skipped): their ids by (task, reminder)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(NOTIFICATIONS)
        .on_conflict_do_nothing()
        .returning(NOTIFICATIONS.c.id, NOTIFICATIONS.c.task_id, NOTIFICATIONS.c.reminder_id)
    )
    rows = conn.execute(statement, values).all()
    return {(int(row.task_id), int(row.reminder_id)): int(row.id) for row in rows}


@dataclass
class Sent:
    delivery_id: int
    channel: str
    outcome: Outcome
    attempts: int
    fire_at: datetime
    subscription_id: int | None = None


class Scheduler:
    def __init__(self, database: Database, settings: Settings, busy: Callable[[], bool] = lambda: False) -> None:
        self.database = database
        # True while this process serves a request: the scheduler gives way (`_give_way`), so a burst of reminders
        # delays requests little (in one process, every busy thread makes the others wait for the GIL).
        self.busy = busy
        self.settings = settings
        self.push = PushSender(settings) if settings.push_enabled else None
        self.email = bool(settings.SMTP_HOST)
        self.metrics: Metrics | None = get_metrics() if settings.METRICS_ENABLED else None
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._mailer = ThreadPoolExecutor(MAIL_THREADS, thread_name_prefix="reminder-mail")
        self._sending = asyncio.Semaphore(1)  # made for each batch, with its limit (`send_due`)
        self._requests_seen = False
        # The shortest round trip of a push send lately (drifting up, so a slower route is learnt), and the CPU one
        # send took in the last batch: what `_in_flight_limit` reads.
        self._round_trip = ROUND_TRIP_START
        self._cpu_per_send = 0.0
        self._thread: threading.Thread | None = None

    # --- Firing ---

    def fire_due(self, now: datetime | None = None) -> int:
        """Fire one batch of due reminders; returns how many jobs it took (fired or dropped as too late)."""
        now = now or utcnow()
        oldest = now - timedelta(seconds=self.settings.REMINDER_MAX_LATENESS)
        with self.database.transaction() as conn:
            rows = conn.execute(DUE_JOBS, {"now": now, "limit": self.settings.REMINDER_BATCH_SIZE}).all()
            if not rows:
                return 0
            fresh = [row for row in rows if row.fire_at >= oldest]
            late = [row for row in rows if row.fire_at < oldest]
            if late:
                conn.execute(DROP_JOB, [{"task_id": row.task_id, "reminder_id": row.reminder_id} for row in late])
                logger.warning("reminders: %d dropped, more than REMINDER_MAX_LATENESS late", len(late))
                self._count("in_app", "late", len(late))
            if fresh:
                self._fire(conn, fresh, now)
        return len(rows)

    def _fire(self, conn: Connection, rows: Sequence[Row[Any]], now: datetime) -> None:
        by_task: dict[int, list[Row[Any]]] = {}
        for row in rows:
            by_task.setdefault(row.task_id, []).append(row)
        updates = []
        for task_id, jobs in by_task.items():
            stored = json.loads(jobs[0].reminders)
            for job in jobs:
                stored = fired(stored, job.reminder_id, now)
            updates.append((task_id, stored))
        _set_fired(conn, updates, now)  # the triggers delete the jobs
        notifications = [
            dict(
                zip(
                    _NOTIFICATION_VALUES,
                    (row.user_id, "reminder", row.task_id, row.reminder_id, row.title, row.due_date, row.fire_at, now),
                    strict=True,
                )
            )
            for row in rows
        ]
        ids = _insert_notifications(conn, notifications)
        email, push = [], []
        for row in rows:
            notification_id = ids.get((row.task_id, row.reminder_id))
            if notification_id is None:
                continue
            channels = json.loads(row.channels)
            if "email" in channels and self.email and row.email:
                email.append(notification_id)
            if "push" in channels and self.push is not None:
                push.append(notification_id)
            changed(conn, row.user_id)
        if email:
            conn.execute(QUEUE_EMAIL, {"ids": email, "channel": "email", "now": now})
        if push:
            conn.execute(QUEUE_PUSH, {"ids": push, "channel": "push", "now": now})
        self._count("in_app", "sent", len(ids))

    # --- Sending ---

    async def send_due(self, session: aiohttp.ClientSession | None, now: datetime | None = None) -> int:
        """Claim, send and record one batch of due deliveries; returns how many were claimed."""
        now = now or utcnow()
        until = now + timedelta(seconds=self.settings.REMINDER_CLAIM_SECONDS)
        with self.database.transaction() as conn:
            ids = [
                row.id
                for row in conn.execute(CLAIM, {"now": now, "until": until, "limit": self.settings.REMINDER_BATCH_SIZE})
            ]
            claimed = conn.execute(CLAIMED, {"ids": ids}).all() if ids else []
        if not claimed:
            return 0
        self._sending = asyncio.Semaphore(self._in_flight_limit())
        cpu = time.thread_time()
        outcomes = await asyncio.gather(*(self._send(session, row) for row in claimed))
        self._cpu_per_send = (time.thread_time() - cpu) / len(claimed)
        results = [
            Sent(row.id, row.channel, outcome, row.attempts, row.fire_at, row.subscription_id)
            for row, outcome in zip(claimed, outcomes, strict=True)
            if outcome is not None
        ]
        unsent = [row.id for row, outcome in zip(claimed, outcomes, strict=True) if outcome is None]
        self._record(results, unsent)
        return len(claimed)

    async def _send(self, session: aiohttp.ClientSession | None, row: Any) -> Outcome | None:
        """One send (None: not started, the scheduler is stopping); never raises (an unexpected error is logged and
        retried like a failed send)."""
        async with self._sending:
            if self.stopping.is_set():
                return None
            await self._give_way()
            try:
                if row.channel == "email":
                    message = mail.reminder_message(
                        self.settings,
                        to=row.email,
                        title=row.title,
                        due=_text(row.due_date) if row.due_date else None,
                        fire_at=_text(row.fire_at),
                    )
                    await asyncio.get_running_loop().run_in_executor(self._mailer, mail.send, self.settings, message)
                    return "sent"
                if self.push is None or session is None or row.endpoint is None:
                    return "failed"  # push was turned off since, or the subscription went meanwhile
                payload = to_json(
                    {
                        "type": "reminder",
                        "task_id": row.task_id,
                        "title": row.title,
                        "due_date": row.due_date,
                        "fire_at": row.fire_at,
                    }
                )
                started = time.monotonic()
                status = await self.push.send(
                    session, PushSubscriptionKeys(row.endpoint, row.p256dh, row.auth), payload
                )
                self._round_trip = min(self._round_trip * ROUND_TRIP_DRIFT, time.monotonic() - started)
            except EndpointRefused:
                return "refused"
            except (OSError, smtplib.SMTPException, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("reminders: %s send failed (%s), will retry", row.channel, type(exc).__name__)
                return "retry"
            except Exception:
                logger.exception("reminders: %s send raised", row.channel)
                return "retry"
        if 200 <= status < 300:
            return "sent"
        if status in (404, 410):
            return "gone"
        if status in (408, 425, 429) or status >= 500:
            return "retry"
        logger.warning("reminders: the push service refused a message (%d)", status)
        return "failed"

    def _record(self, results: list[Sent], unsent: list[int]) -> None:
        now = utcnow()
        done: list[int] = []
        gone: list[int] = []
        retries: list[dict[str, Any]] = []
        for result in results:
            outcome = result.outcome
            if outcome == "retry":
                delay = min(self.settings.REMINDER_RETRY_SECONDS * 2 ** (result.attempts - 1), MAX_RETRY_SECONDS)
                next_attempt = now + timedelta(seconds=delay)
                deadline = result.fire_at + timedelta(seconds=self.settings.REMINDER_MAX_LATENESS)
                if result.attempts < self.settings.REMINDER_MAX_ATTEMPTS and next_attempt <= deadline:
                    retries.append({"delivery_id": result.delivery_id, "next_attempt_at": next_attempt})
                else:
                    outcome = result.outcome = "failed"
                    logger.error("reminders: %s send given up after %d attempts", result.channel, result.attempts)
            if outcome == "gone" and result.subscription_id is not None:
                gone.append(result.subscription_id)
            elif outcome != "retry":
                done.append(result.delivery_id)
            self._count(result.channel, outcome, 1)
            if outcome == "sent" and self.metrics is not None:
                self.metrics.reminder_lag.labels(result.channel).observe((now - result.fire_at).total_seconds())
        with self.database.transaction() as conn:
            if done:
                conn.execute(DONE, {"ids": done})
            if gone:
                conn.execute(GONE, {"ids": gone})  # its deliveries go with it
            if retries:
                conn.execute(RETRY, retries)
            if unsent:
                conn.execute(RELEASE, {"ids": unsent})

    def _count(self, channel: str, outcome: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.reminders_sent.labels(channel, outcome).inc(n)

    # --- Running ---

    def _in_flight_limit(self) -> int:
        """How many sends at once: enough to cover a send's round trip with the CPU a send takes here (more only
        queue, here or at the push service, and take CPU from the requests), at most REMINDER_SEND_CONCURRENCY. A
        push service 100 ms away gets them all; one on this machine, two or three."""
        if self._cpu_per_send <= 0:
            return self.settings.REMINDER_SEND_CONCURRENCY
        wanted = math.ceil(self._round_trip / self._cpu_per_send) + 1
        return max(MIN_IN_FLIGHT, min(wanted, self.settings.REMINDER_SEND_CONCURRENCY))

    async def _give_way(self) -> None:
        """Wait while a request is being served, up to GIVE_WAY_SECONDS: requests first, yet the scheduler never
        stalls under a steady load."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GIVE_WAY_SECONDS
        while self.busy() and loop.time() < deadline:
            self._requests_seen = True
            await asyncio.sleep(GIVE_WAY_STEP)

    async def run_once(self, session: aiohttp.ClientSession | None) -> int:
        """Fire everything due, then send everything due; returns how much work there was."""
        work = 0
        while not self.stopping.is_set():
            cpu, self._requests_seen = time.thread_time(), False
            await self._give_way()
            fired_now = self.fire_due()
            sent_now = await self.send_due(session)
            work += fired_now + sent_now
            if self._requests_seen:
                # Requests are being served: the scheduler rests REST_PER_CPU times as long as it just computed, so it
                # takes at most a third of a core from them (waiting on the network costs it no rest).
                await asyncio.sleep(min((time.thread_time() - cpu) * REST_PER_CPU, MAX_PAUSE_SECONDS))
            if fired_now < self.settings.REMINDER_BATCH_SIZE and sent_now < self.settings.REMINDER_BATCH_SIZE:
                break
        return work

    def run(self) -> None:
        """Until `stop()`: work, then wait REMINDER_POLL_SECONDS (or until woken). Sends run on an event loop of
        this thread (up to REMINDER_SEND_CONCURRENCY at once, one thread however many: the requests' threads
        compete with one more, not with one per send); emails through a small pool (smtplib blocks)."""
        asyncio.run(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(self.push.session()) if self.push is not None else None
            while not self.stopping.is_set():
                try:
                    await self.run_once(session)
                except Exception as exc:  # the scheduler goes on: again at the next poll
                    if isinstance(exc, DBAPIError | PoolTimeoutError) and is_database_unavailable(exc):
                        logger.warning("reminders: database unavailable (%s)", type(exc).__name__)
                    else:
                        logger.exception("reminders: scheduler step failed")
                await loop.run_in_executor(self._mailer, self._wake.wait, self.settings.REMINDER_POLL_SECONDS)
                self._wake.clear()
        self._mailer.shutdown(wait=True)

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def start(self) -> None:
        """The scheduler in a thread of this process (`todo-api serve`)."""
        self._thread = threading.Thread(target=self.run, name="reminder-scheduler", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        """Stop: the sends under way finish (each within PUSH_TIMEOUT), the claimed rest is released."""
        self.stop()
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join)
        self.database.engine.dispose()


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")
