"""Helpers of the reminder tests: settings for served apps with the scheduler on, and a user's requests."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import make_settings
from tests.events.test_events import Client
from tests.mailbox import Inbox
from tests.reminders.push_service import PushService
from todo_api.config import Settings

SUBJECT = "mailto:ops@example.com"


def iso(moment: datetime) -> str:
    text_ = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text_


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def reminder_settings(database_url: str, vapid_pem: str, smtp_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "REMINDERS_ENABLED": True,
        "REMINDER_POLL_SECONDS": 0.1,
        "REMINDER_RETRY_SECONDS": 0.2,
        "VAPID_PRIVATE_KEY": vapid_pem,
        "VAPID_SUBJECT": SUBJECT,
        "PUSH_ALLOW_PRIVATE_ENDPOINTS": True,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp_port,
        "EVENT_AUTH_CHECK_SECONDS": 0.5,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


def email_of(client: Client) -> str:
    email: str = client.http.get("/api/auth/me").json()["email"]
    return email


def subscribe(client: Client, push: PushService, name: str) -> dict[str, Any]:
    response = client.http.post("/api/me/push-subscriptions", json=push.subscribe(name))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def remind(client: Client, at: datetime, **fields: Any) -> dict[str, Any]:
    response = client.http.post(
        "/api/me/tasks", json={"title": "Water the plants", "reminders": [{"at": iso(at)}], **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def feed(client: Client, **params: Any) -> httpx.Response:
    return client.http.get("/api/me/notifications", params=params)


def wait_until(check: Any, timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


def mails_to(inbox: Inbox, address: str) -> list[Any]:
    return [mail for mail in inbox.mails if address in mail.recipients]
