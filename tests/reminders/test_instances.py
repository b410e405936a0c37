"""Reminders with instances started and stopped by the test itself (no other scheduler on the database meanwhile):
SMTP down then up across a restart, a reminder due while no instance ran, the SSRF check at send time, and two
instances sharing 200 reminders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests import netguard
from tests.conftest import LiveServer
from tests.events.test_events import _redis_up, register
from tests.mailbox import Inbox, free_port, smtp_on
from tests.netguard import stub_resolver
from tests.reminders.helpers import (
    SUBJECT,
    email_of,
    feed,
    remind,
    reminder_settings,
    soon,
    subscribe,
    wait_until,
)
from tests.reminders.push_service import PushService
from todo_api.config import normalize_database_url
from todo_api.main import create_app


def test_smtp_down_then_up_delivers_once(database_url: str, vapid_pem: str) -> None:
    """The email is retried while SMTP is down, across a restart of the instance, and sent once when it is back."""
    inbox, port = Inbox(), free_port()
    settings = reminder_settings(database_url, vapid_pem, port)
    with LiveServer(create_app(settings)) as first:
        alice = register(first)
        alice.http.patch("/api/auth/me", json={"notification_channels": ["email"]})
        remind(alice, soon(0.3))
        wait_until(lambda: feed(alice).json(), what="the reminder fired")
        time.sleep(0.8)  # a few failed attempts
        alice.close()
    assert inbox.mails == []
    with smtp_on(port, inbox), LiveServer(create_app(settings)):
        wait_until(lambda: inbox.mails, timeout=15, what="the email once SMTP is back")
        time.sleep(1.0)
    assert len(inbox.mails) == 1
    assert inbox.mails[0].message["Subject"] == "Reminder: Water the plants"


def test_a_reminder_due_while_no_instance_ran_is_sent_unless_too_late(
    database_url: str, vapid_pem: str, smtp: tuple[Inbox, int], push: PushService
) -> None:
    off = reminder_settings(database_url, vapid_pem, smtp[1], REMINDERS_ENABLED=False)
    with LiveServer(create_app(off)) as first:
        alice = register(first)
        alice.http.patch("/api/auth/me", json={"notification_channels": ["push"]})
        subscribe(alice, push, "late-phone")
        too_late = remind(alice, soon(0.5), title="too late")
        in_time = remind(alice, soon(2.5), title="in time")
        alice.close()
    time.sleep(3.0)  # both are due now: the first 2.5 s late, the second 0.5 s

    on = reminder_settings(database_url, vapid_pem, smtp[1], REMINDER_MAX_LATENESS=1.5)
    with LiveServer(create_app(on)) as second:
        alice.http = httpx.Client(base_url=second.url, headers=alice.headers, timeout=30)
        (sent,) = wait_until(lambda: [r for r in push.received if r.name == "late-phone"], what="the late reminder")
        assert sent.payload["task_id"] == in_time["id"]
        time.sleep(0.5)
        assert [item["task_id"] for item in feed(alice).json()] == [in_time["id"]]
        assert alice.http.get(f"/api/me/tasks/{too_late['id']}").json()["reminders"][0]["fired_at"] is None
        alice.close()


def test_an_endpoint_that_resolves_privately_at_send_time_is_never_contacted(
    database_url: str, vapid_pem: str, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = stub_resolver(monkeypatch, {"push.rebind.test": ["93.184.215.14"]})
    settings = reminder_settings(database_url, vapid_pem, smtp[1], PUSH_ALLOW_PRIVATE_ENDPOINTS=False)
    netguard.attempts.clear()
    with LiveServer(create_app(settings)) as live:
        alice = register(live)
        alice.http.patch("/api/auth/me", json={"notification_channels": ["push"]})
        subscription = {
            "endpoint": "https://push.rebind.test/send/1",
            "keys": {
                "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                "auth": "tBHItJI5svbpez7KI4CCXg",
            },
        }
        assert alice.http.post("/api/me/push-subscriptions", json=subscription).status_code == 201
        resolver.mapping["push.rebind.test"] = ["127.0.0.1"]  # DNS rebinding: now it points inside

        remind(alice, soon(0.3))
        wait_until(lambda: feed(alice).json(), what="the reminder fired")
        engine = create_engine(normalize_database_url(database_url))
        try:
            wait_until(lambda: _pending_deliveries(engine, alice.id) == 0, what="the refused delivery dropped")
        finally:
            engine.dispose()
        alice.close()
    assert netguard.attempts == []


def _pending_deliveries(engine: Any, user_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(text("SELECT count(*) FROM deliveries WHERE user_id = :u"), {"u": user_id}).scalar()
        )


def test_two_instances_deliver_200_reminders_exactly_once_per_channel(
    database_url: str, vapid_pem: str, push: PushService, smtp: tuple[Inbox, int]
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several instances on one database: PostgreSQL (SQLite is one process)")
    inbox = smtp[0]
    settings = reminder_settings(database_url, vapid_pem, smtp[1], REMINDER_BATCH_SIZE=20)
    off = reminder_settings(database_url, vapid_pem, smtp[1], REMINDERS_ENABLED=False)
    with LiveServer(create_app(off)) as setup:
        users = [register(setup) for _ in range(4)]
        for n, user in enumerate(users):
            subscribe(user, push, f"pair-{n}")
        at = soon(4)
        tasks = [remind(user, at, title=f"t{n}-{i}")["id"] for n, user in enumerate(users) for i in range(50)]
        emails = {email_of(user) for user in users}
    before = len(push.received)
    with LiveServer(create_app(settings)), LiveServer(create_app(settings)):
        push.wait_for(before + 200, timeout=30)
        wait_until(lambda: len([m for m in inbox.mails if set(m.recipients) & emails]) >= 200, timeout=30)
        time.sleep(1.0)
    pushed = Counter(r.payload["task_id"] for r in push.received[before:] if r.name.startswith("pair-"))
    mailed = Counter(m.message["Subject"] for m in inbox.mails if set(m.recipients) & emails)
    assert sorted(pushed) == sorted(tasks)
    assert set(pushed.values()) == {1}
    assert len(mailed) == 200 and set(mailed.values()) == {1}
    assert push.errors == []
    for user in users:
        user.close()


REDIS = "redis://127.0.0.1:6379/15"


def test_todo_api_worker_sends_reminders_apart_and_stops_on_sigterm(
    tmp_path: Path, database_url: str, vapid_pem: str, smtp: tuple[Inbox, int], push: PushService
) -> None:
    """`todo-api worker` (its own process) delivers what an API instance without a scheduler stored, and the API's
    event stream hears of it through Redis at once (its own check is 30 s away); SIGTERM stops the worker cleanly.
    It never migrates: on an empty database it says so and exits 1."""
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379 (../shared/services.sh starts it)")
    settings = reminder_settings(
        database_url, vapid_pem, smtp[1], REMINDERS_ENABLED=False, REDIS_URL=REDIS, EVENT_AUTH_CHECK_SECONDS=30
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BETTER_AUTH", "ENVIRONMENT"))},
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "BETTER_AUTH_SECRET": settings.BETTER_AUTH_SECRET,
        "LOG_LEVEL": "WARNING",
        "REMINDER_POLL_SECONDS": "0.1",
        "VAPID_PRIVATE_KEY": vapid_pem,
        "VAPID_SUBJECT": SUBJECT,
        "PUSH_ALLOW_PRIVATE_ENDPOINTS": "true",
        "REDIS_URL": REDIS,
    }
    empty = subprocess.run(
        [sys.executable, "-m", "todo_api", "worker"],
        env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 1
    assert "todo-api migrate" in empty.stderr

    with LiveServer(create_app(settings)) as api:
        alice = register(api)
        alice.http.patch("/api/auth/me", json={"notification_channels": ["push"]})
        subscribe(alice, push, "worker-phone")
        listener = alice.listen()
        task = remind(alice, soon(1.0))
        assert listener.next().event == "task.created"
        log = tmp_path / "worker.log"
        with log.open("wb") as output:
            worker = subprocess.Popen(
                [sys.executable, "-m", "todo_api", "worker"], env=env, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            sent = wait_until(lambda: [r for r in push.received if r.name == "worker-phone"], what="the worker's push")
            assert sent[0].payload["task_id"] == task["id"]
            assert len(feed(alice).json()) == 1
            assert [listener.next(timeout=5).event for _ in range(2)] == ["task.updated", "reminder"]
        finally:
            worker.send_signal(signal.SIGTERM)
            returncode = worker.wait(timeout=20)
        alice.close()
    assert returncode == 0, log.read_text()
    assert "sending reminders" in log.read_text()
