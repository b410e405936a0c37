"""Fixtures of the reminder tests: a VAPID key, and per module a Web Push service stand-in and an SMTP server, all
on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from py_vapid import Vapid

from tests.mailbox import Inbox, free_port, smtp_on
from tests.reminders.push_service import PushService
from todo_api.reminders.push import application_server_key, load_vapid_key


@pytest.fixture(scope="session")
def vapid_pem() -> str:
    vapid = Vapid()
    vapid.generate_keys()
    pem: bytes = vapid.private_pem()
    return pem.decode()


@pytest.fixture(scope="module")
def push(vapid_pem: str) -> Iterator[PushService]:
    with PushService(vapid_public_key=application_server_key(load_vapid_key(vapid_pem))) as service:
        yield service


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_on(free_port()) as server:
        yield server
