"""Forgotten passwords: the reset email through a real SMTP server (aiosmtpd), and the single-use reset token."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col, select

from tests.auth.helpers import (
    CHANGE_PASSWORD,
    FORGOT_PASSWORD,
    INVALID_LOGIN,
    LOGIN,
    NEW_PASSWORD,
    OTHER_PASSWORD,
    RESET_PASSWORD,
    assert_refused,
    assert_session_alive,
    assert_session_dead,
    assert_unauthorized,
    assert_validation_error,
    ba_headers,
    better_auth_user,
    commit_and_forget,
    first_session,
    guard,
    login,
    seconds_ago,
)
from tests.conftest import make_settings, use_session
from tests.factories import PASSWORD, UserFactory, unique_email
from tests.mailbox import Inbox, Mail, free_port, smtp_on
from todo_api.auth.models import PasswordResetToken
from todo_api.main import create_app

MAIL_FROM = "Todo Tests <no-reply@todo.test>"
RESET_URL = "http://frontend.test/reset?token={token}"
LINK = re.compile(r"http://frontend\.test/reset\?token=([A-Za-z0-9_\-]+)")
ACCEPTED = {"message": "If an account with a password exists for this email, a reset link is on its way."}
INVALID_RESET = {"detail": "Invalid or expired reset token"}


def reset_token(mail: Mail) -> str:
    """The token of the one reset link in the mail."""
    links = LINK.findall(mail.text)
    assert len(links) == 1, mail.text
    token: str = links[0]
    return token


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    with smtp_on(free_port()) as server:
        yield server


@pytest.fixture
def inbox(smtp_server: tuple[Inbox, int]) -> Inbox:
    smtp_server[0].mails.clear()
    return smtp_server[0]


@contextmanager
def app_client(database_url: str, db_session: Session, **overrides: Any) -> Iterator[TestClient]:
    """A client of an app built with these settings, on the test's rolled-back transaction.

    Starlette's TestClient runs background tasks before it returns the response, so the email is in the
    inbox when a request returns; the mail task itself never touches the database.
    """
    settings: dict[str, Any] = {"PASSWORD_RESET_URL": RESET_URL, "MAIL_FROM": MAIL_FROM}
    settings.update(overrides)
    app = create_app(make_settings(database_url, **settings))
    use_session(app, db_session)
    with TestClient(app, base_url="http://testserver") as client:
        yield guard(client)


@pytest.fixture
def mail_client(database_url: str, db_session: Session, smtp_server: tuple[Inbox, int]) -> Iterator[TestClient]:
    with app_client(database_url, db_session, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server[1]) as client:
        yield client


@pytest.fixture
def accounts(mail_client: TestClient) -> UserFactory:
    return UserFactory(mail_client)


def forgot(client: TestClient, email: str) -> bytes:
    response = client.post(FORGOT_PASSWORD, json={"email": email})
    assert response.status_code == 202, response.text
    assert response.json() == ACCEPTED
    return response.content


def reset(client: TestClient, token: str, new_password: str = NEW_PASSWORD) -> httpx.Response:
    return client.post(RESET_PASSWORD, json={"token": token, "new_password": new_password})


def assert_invalid_reset(client: TestClient, token: str) -> None:
    response = reset(client, token, OTHER_PASSWORD)
    assert response.status_code == 400
    assert response.json() == INVALID_RESET


def reset_token_for(client: TestClient, inbox: Inbox, email: str) -> str:
    """Ask for a reset link and read the token from the one email it sends."""
    sent = len(inbox.mails)
    forgot(client, email)
    assert len(inbox.mails) == sent + 1
    return reset_token(inbox.mails[-1])


def password_login(client: TestClient, email: str, password: str) -> httpx.Response:
    return client.post(LOGIN, json={"email": email, "password": password})


# --------------------------------------------------------------------------------------------- forgot-password


def test_forgot_password_sends_one_email_with_a_reset_link(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox
) -> None:
    user = accounts.create()

    forgot(mail_client, f"  {user.email.upper()} ")

    assert len(inbox.mails) == 1
    mail = inbox.mails[0]
    assert mail.recipients == [user.email]
    assert mail.message["To"] == user.email
    assert mail.message["From"] == MAIL_FROM
    assert mail.sender == "no-reply@todo.test"
    assert mail.message["Subject"]
    assert re.fullmatch(r"[A-Za-z0-9_\-]{32,}", reset_token(mail))
    assert PASSWORD not in mail.text


def test_forgot_password_answers_the_same_whether_or_not_the_account_exists(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox
) -> None:
    user = accounts.create()
    _, ba_email, _ = better_auth_user(mail_client)

    existing = forgot(mail_client, user.email)
    unknown = forgot(mail_client, unique_email("nobody"))
    without_password = forgot(mail_client, ba_email)

    assert existing == unknown == without_password
    # Only the account with a password gets an email.
    assert [mail.recipients for mail in inbox.mails] == [[user.email]]


@pytest.mark.parametrize("payload", [{}, {"email": ""}, {"email": "not-an-email"}, {"email": None}])
def test_forgot_password_validation(mail_client: TestClient, inbox: Inbox, payload: dict[str, Any]) -> None:
    assert_validation_error(mail_client.post(FORGOT_PASSWORD, json=payload))
    assert inbox.mails == []


# --------------------------------------------------------------------------------------------- reset-password


def test_reset_password_sets_the_new_password_and_ends_every_session(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox
) -> None:
    user = accounts.create()
    registered, other = first_session(user), login(mail_client, user.email)
    frontend = ba_headers(user.id, email=user.email, iat=seconds_ago(5))
    assert_session_alive(mail_client, other)
    token = reset_token_for(mail_client, inbox, user.email)

    response = reset(mail_client, token)

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_session_dead(mail_client, registered)
    assert_refused(mail_client, other.headers)
    assert_refused(mail_client, frontend)
    fresh = login(mail_client, user.email, NEW_PASSWORD)
    assert_session_alive(mail_client, fresh)
    assert_unauthorized(password_login(mail_client, user.email, PASSWORD), INVALID_LOGIN)


def test_a_reset_token_works_once(mail_client: TestClient, accounts: UserFactory, inbox: Inbox) -> None:
    user = accounts.create()
    token = reset_token_for(mail_client, inbox, user.email)
    assert reset(mail_client, token).status_code == 204

    assert_invalid_reset(mail_client, token)

    login(mail_client, user.email, NEW_PASSWORD)
    assert_unauthorized(password_login(mail_client, user.email, OTHER_PASSWORD), INVALID_LOGIN)


def test_an_expired_reset_token_is_400(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox, db_session: Session
) -> None:
    user = accounts.create()
    token = reset_token_for(mail_client, inbox, user.email)
    db_session.execute(
        update(PasswordResetToken)
        .where(col(PasswordResetToken.user_id) == user.id)
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    commit_and_forget(db_session)

    assert_invalid_reset(mail_client, token)

    login(mail_client, user.email, PASSWORD)


@pytest.mark.parametrize("token", ["garbage", "x" * 43, "a" * 256])
def test_an_unknown_reset_token_is_400(mail_client: TestClient, token: str) -> None:
    assert_invalid_reset(mail_client, token)


def test_using_one_reset_token_voids_the_others(mail_client: TestClient, accounts: UserFactory, inbox: Inbox) -> None:
    user = accounts.create()
    first = reset_token_for(mail_client, inbox, user.email)
    second = reset_token_for(mail_client, inbox, user.email)
    assert first != second

    assert reset(mail_client, second).status_code == 204

    assert_invalid_reset(mail_client, first)
    login(mail_client, user.email, NEW_PASSWORD)


def test_a_password_change_voids_outstanding_reset_tokens(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox
) -> None:
    user = accounts.create()
    token = reset_token_for(mail_client, inbox, user.email)
    changed = mail_client.post(
        CHANGE_PASSWORD, headers=user.headers, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text

    assert_invalid_reset(mail_client, token)

    login(mail_client, user.email, NEW_PASSWORD)


RESET_SECRET = "reset-secret-token-value"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"token": "", "new_password": NEW_PASSWORD},
        {"token": RESET_SECRET + "\x00", "new_password": NEW_PASSWORD},
        {"token": RESET_SECRET},
        {"token": RESET_SECRET, "new_password": "password"},
        {"token": RESET_SECRET, "new_password": "Sh0rt!x"},
    ],
    ids=["empty-body", "empty-token", "nul-token", "no-password", "common-password", "short-password"],
)
def test_reset_password_validation_never_echoes_secrets(mail_client: TestClient, payload: dict[str, Any]) -> None:
    errors = assert_validation_error(mail_client.post(RESET_PASSWORD, json=payload), RESET_SECRET, "Sh0rt!x")
    assert all("input" not in error for error in errors if error["loc"][-1] in {"token", "new_password"})


def test_a_weak_new_password_does_not_spend_the_token(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox
) -> None:
    user = accounts.create()
    token = reset_token_for(mail_client, inbox, user.email)

    assert_validation_error(reset(mail_client, token, "password"))

    assert reset(mail_client, token).status_code == 204
    login(mail_client, user.email, NEW_PASSWORD)


# --------------------------------------------------------------------------------------------- delivery problems


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "todo_api.mail" and record.levelno == level]


def register_with(client: TestClient) -> str:
    return UserFactory(client).create().email


def test_forgot_password_with_smtp_down_is_still_202_and_logged(
    database_url: str, db_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="todo_api.mail")
    with app_client(database_url, db_session, SMTP_HOST="127.0.0.1", SMTP_PORT=free_port()) as client:
        email = register_with(client)
        body = forgot(client, email)
        assert body == forgot(client, unique_email("nobody"))

    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1, caplog.text
    assert "not sent" in errors[0].getMessage()
    assert "frontend.test" not in caplog.text
    assert "token=" not in caplog.text


def test_in_development_without_smtp_the_link_is_logged(
    database_url: str, db_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="todo_api.mail")
    with app_client(database_url, db_session, ENVIRONMENT="development", SMTP_HOST="") as client:
        email = register_with(client)
        forgot(client, email)
        logged = records(caplog, logging.INFO)
        assert len(logged) == 1, caplog.text
        message = logged[0].getMessage()
        assert "DEVELOPMENT" in message
        tokens = LINK.findall(message)
        assert len(tokens) == 1, message
        # The logged link is the real one.
        assert reset(client, tokens[0]).status_code == 204
        login(client, email, NEW_PASSWORD)


@pytest.mark.parametrize("environment", ["test", "production"])
def test_outside_development_the_link_is_never_logged(
    database_url: str, db_session: Session, caplog: pytest.LogCaptureFixture, environment: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="todo_api")
    with app_client(database_url, db_session, ENVIRONMENT=environment, SMTP_HOST="") as client:
        forgot(client, register_with(client))

    assert "frontend.test" not in caplog.text
    assert "token=" not in caplog.text
    assert len(records(caplog, logging.ERROR)) == 1, caplog.text


def test_reset_tokens_are_stored_hashed(
    mail_client: TestClient, accounts: UserFactory, inbox: Inbox, db_session: Session
) -> None:
    user = accounts.create()
    token = reset_token_for(mail_client, inbox, user.email)

    stored = db_session.exec(select(PasswordResetToken).where(PasswordResetToken.user_id == user.id)).all()

    assert len(stored) == 1
    assert stored[0].token_hash != token
    assert token not in stored[0].token_hash
