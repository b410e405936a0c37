"""Reminders delivered by a served app's scheduler (real commits) to a real SMTP server (aiosmtpd), a Web Push
service stand-in that checks and decrypts every message (push_service.py), the in-app feed and the live events
stream. Instances started and stopped by a test are in test_instances.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.events.test_events import register
from tests.mailbox import Inbox
from tests.reminders.helpers import (
    SUBJECT,
    email_of,
    feed,
    iso,
    mails_to,
    remind,
    reminder_settings,
    soon,
    subscribe,
    wait_until,
)
from tests.reminders.push_service import PushService
from todo_api.main import create_app


@pytest.fixture(scope="module")
def server(database_url: str, vapid_pem: str, smtp: tuple[Inbox, int]) -> Iterator[LiveServer]:
    settings = reminder_settings(database_url, vapid_pem, smtp[1], METRICS_ENABLED=True)
    with LiveServer(create_app(settings)) as live:
        yield live


def test_a_reminder_reaches_push_email_the_feed_and_the_stream_once(
    server: LiveServer, push: PushService, smtp: tuple[Inbox, int]
) -> None:
    inbox = smtp[0]
    alice, bob = register(server), register(server)
    subscribe(alice, push, "alice-phone")
    assert bob.http.patch("/api/auth/me", json={"notification_channels": []}).status_code == 200
    listener = alice.listen()
    due = soon(3600).replace(microsecond=0)
    at = soon(1.0)
    task = remind(alice, at, due_date=iso(due))
    remind(bob, at)

    received = push.wait_for(1)[-1]
    assert received.name == "alice-phone"
    assert received.payload == {
        "type": "reminder",
        "task_id": task["id"],
        "title": "Water the plants",
        "due_date": iso(due),
        "fire_at": task["reminders"][0]["fire_at"],
    }
    assert received.claims["sub"] == SUBJECT
    assert received.claims["aud"] == push.origin
    assert received.ttl == 86400
    assert push.errors == []

    mails = wait_until(lambda: mails_to(inbox, email_of(alice)), what="the reminder email")
    assert mails[0].message["Subject"] == "Reminder: Water the plants"
    assert "Water the plants" in mails[0].message.get_content()

    page = feed(alice)
    assert page.status_code == 200
    assert page.headers["X-Total-Count"] == "1"
    (notification,) = page.json()
    assert notification == {
        "id": notification["id"],
        "type": "reminder",
        "task_id": task["id"],
        "reminder_id": 1,
        "title": "Water the plants",
        "due_date": iso(due),
        "fire_at": task["reminders"][0]["fire_at"],
        "created_at": notification["created_at"],
        "read_at": None,
    }
    seen = [listener.next() for _ in range(3)]  # the task created, then fired: updated, and the reminder
    assert [event.event for event in seen] == ["task.created", "task.updated", "reminder"]
    rendered = json.dumps(notification, separators=(",", ":"), ensure_ascii=False)
    assert seen[2].data == '{"notification":' + rendered + "}"
    assert seen[1].json()["task"]["reminders"][0]["fired_at"] is not None

    fired = alice.http.get(f"/api/me/tasks/{task['id']}").json()
    assert fired["reminders"][0]["fired_at"] is not None
    assert fired["version"] == task["version"] + 1

    # Bob (no channels) got the in-app notification only, and nothing of Alice's.
    (mine,) = wait_until(lambda: feed(bob).json(), what="bob's notification")
    assert mine["task_id"] != task["id"]
    assert mails_to(inbox, email_of(bob)) == []

    # Read, then nothing unread; and nothing was sent twice.
    read = alice.http.post(f"/api/me/notifications/{notification['id']}/read")
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    assert feed(alice, unread="true").json() == []
    time.sleep(0.5)
    assert [r.name for r in push.received].count("alice-phone") == 1
    assert len(mails_to(inbox, email_of(alice))) == 1
    assert alice.http.post("/api/me/notifications/read-all").status_code == 204
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'reminders_sent_total{channel="push",outcome="sent"}' in metrics
    assert 'reminders_sent_total{channel="email",outcome="sent"}' in metrics
    assert 'reminder_delivery_lag_seconds_count{channel="push"}' in metrics
    for client in (alice, bob):
        client.close()


def test_a_gone_subscription_is_deleted(server: LiveServer, push: PushService) -> None:
    alice = register(server)
    alice.http.patch("/api/auth/me", json={"notification_channels": ["push"]})
    subscribe(alice, push, "gone-phone")
    push.respond["gone-phone"] = 410

    remind(alice, soon(0.5))

    wait_until(lambda: alice.http.get("/api/me/push-subscriptions").json() == [], what="the subscription deleted")
    assert push.attempts["gone-phone"] == 1
    assert len(feed(alice).json()) == 1
    alice.close()


def test_completing_a_task_before_its_reminder_cancels_it(server: LiveServer, push: PushService) -> None:
    alice = register(server)
    subscribe(alice, push, "cancel-phone")
    task = remind(alice, soon(0.7))

    assert alice.http.patch(f"/api/me/tasks/{task['id']}", json={"completed": True}).status_code == 200

    time.sleep(1.5)
    assert push.attempts["cancel-phone"] == 0
    assert feed(alice).json() == []
    alice.close()


def test_a_push_service_error_is_retried_and_a_refusal_is_not(server: LiveServer, push: PushService) -> None:
    alice = register(server)
    alice.http.patch("/api/auth/me", json={"notification_channels": ["push"]})
    subscribe(alice, push, "flaky-phone")
    subscribe(alice, push, "strict-phone")
    push.respond["flaky-phone"] = 503
    push.respond["strict-phone"] = 400

    task = remind(alice, soon(0.3))

    wait_until(lambda: push.attempts["flaky-phone"] >= 2, what="a retry after the 503")
    push.respond["flaky-phone"] = 201
    (sent,) = wait_until(lambda: [r for r in push.received if r.name == "flaky-phone"], what="the retried push")
    assert sent.payload["task_id"] == task["id"]
    time.sleep(0.8)
    assert push.attempts["strict-phone"] == 1  # a 400 is not retried
    assert [r.name for r in push.received].count("flaky-phone") == 1
    assert len(alice.http.get("/api/me/push-subscriptions").json()) == 2  # only 404 and 410 delete one
    alice.close()
