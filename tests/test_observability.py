"""One access-log line per request, the JSON and console log formats, and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.conftest import make_settings, use_session
from tests.factories import UserFactory
from todo_api.logs import ConsoleFormatter, JsonFormatter, configure_logging
from todo_api.main import create_app


def _access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "todo_api.access"]


def test_one_access_line_per_request_with_route_template(
    client: TestClient, users: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    user = users.create()
    task = client.post("/api/me/tasks", headers=user.headers, json={"title": "logged"}).json()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="todo_api.access")
    response = client.get(f"/api/me/tasks/{task['id']}", headers={**user.headers, "X-Request-ID": "req-42"})
    assert response.status_code == 200
    [record] = _access_records(caplog)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "request"
    assert line["method"] == "GET"
    assert line["path"] == "/api/{user_id}/tasks/{task_id}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["request_id"] == "req-42"
    assert line["user_id"] == user.id
    assert {"ts", "level", "logger"} <= set(line)


def test_access_line_without_user_and_for_errors(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="todo_api.access")
    client.get("/api/me/tasks")
    client.get("/no/such/route")
    unauthorized, unmatched = (json.loads(JsonFormatter().format(r)) for r in _access_records(caplog))
    assert unauthorized["status"] == 401 and "user_id" not in unauthorized
    assert unauthorized["path"] == "/api/{user_id}/tasks"
    assert unmatched["status"] == 404 and unmatched["path"] == "<unmatched>"


def test_logs_never_contain_tokens_or_passwords(
    client: TestClient, users: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = users.create()
    client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    client.post("/api/auth/login", json={"email": user.email, "password": "wrong password 123"})
    client.get("/api/auth/me", headers=user.headers)
    client.get("/api/auth/me", headers={"Authorization": "Bearer not.a.valid-token"})
    formatted = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    for secret in (user.token, user.password, "wrong password 123", "not.a.valid-token"):
        assert secret not in formatted


def test_json_formatter_keeps_extras_and_hides_exception_messages() -> None:
    try:
        raise ValueError("SELECT secret FROM users WHERE password='hunter2'")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    record.event = "token_rejected"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed here"
    assert line["event"] == "token_rejected"
    assert line["exception"] == "ValueError"
    assert any("test_observability.py" in frame for frame in line["stack"])
    assert "hunter2" not in json.dumps(line)


def _record(message: str, *args: object, exc_info: Any = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("todo_api.access", logging.INFO, __file__, 1, message, args, exc_info)
    record.created = 1800000000.25  # 2027-01-15T08:00:00.250Z
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_console_formatter_is_one_readable_line() -> None:
    record = _record(
        "request", method="GET", path="/api/{user_id}/tasks", status=200, duration_ms=1.5, note="two words", user=None
    )
    assert ConsoleFormatter().format(record) == (
        "2027-01-15T08:00:00.250Z INFO    todo_api.access: request method=GET path=/api/{user_id}/tasks status=200 "
        'duration_ms=1.5 note="two words" user=null'
    )
    assert json.loads(JsonFormatter().format(record)) == {
        "ts": "2027-01-15T08:00:00.250+00:00",
        "level": "INFO",
        "logger": "todo_api.access",
        "message": "request",
        "method": "GET",
        "path": "/api/{user_id}/tasks",
        "status": 200,
        "duration_ms": 1.5,
        "note": "two words",
        "user": None,
    }


def test_console_formatter_cannot_be_made_to_forge_lines() -> None:
    record = _record("reset link for %s", "a\nFAKE ERROR", field="x\ny", empty="")
    assert ConsoleFormatter().format(record) == (
        '2027-01-15T08:00:00.250Z INFO    todo_api.access: reset link for a\\nFAKE ERROR field="x\\ny" empty=""'
    )


def test_console_formatter_hides_exception_messages() -> None:
    try:
        raise ValueError("SELECT secret FROM users WHERE password='hunter2'")
    except ValueError as exc:
        assert exc.__traceback__ is not None
        raised_at = exc.__traceback__.tb_lineno
        record = _record("failed %s", "here", exc_info=sys.exc_info(), event="token_rejected")
    first, *stack = ConsoleFormatter().format(record).split("\n")
    assert first == (
        "2027-01-15T08:00:00.250Z INFO    todo_api.access: failed here event=token_rejected exception=ValueError"
    )
    assert stack == [f"    at {__file__}:{raised_at} in test_console_formatter_hides_exception_messages"]


def _ours(handler: logging.Handler) -> bool:
    return isinstance(handler.formatter, ConsoleFormatter | JsonFormatter)


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """No handler of ours on the root logger (the next one writes to this test's stdout); restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.handlers[:] = [handler for handler in handlers if not _ours(handler)]
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.usefixtures("fresh_logging")
def test_configure_logging_writes_the_chosen_format_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("todo_api.example")
    configure_logging("info", "console")
    log.info("hello %s", "world", extra={"user_id": "u1"})
    log.debug("not at INFO")
    configure_logging("debug", "json")  # reconfigured: still one line a record, now JSON
    log.debug("hello again")
    console, json_line, nothing = capsys.readouterr().out.split("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    todo_api.example: hello world user_id=u1", console
    )
    assert {k: v for k, v in json.loads(json_line).items() if k != "ts"} == {
        "level": "DEBUG",
        "logger": "todo_api.example",
        "message": "hello again",
    }
    assert nothing == ""


@pytest.mark.usefixtures("fresh_logging")
def test_the_app_logs_in_the_format_its_settings_name(database_url: str) -> None:
    root = logging.getLogger()
    create_app(make_settings(database_url, LOG_FORMAT="console"))
    assert [type(handler.formatter) for handler in root.handlers if _ours(handler)] == [ConsoleFormatter]
    create_app(make_settings(database_url))  # ENVIRONMENT=test: json
    assert [type(handler.formatter) for handler in root.handlers if _ours(handler)] == [JsonFormatter]


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_metrics_are_off_by_default(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 404


def test_metrics_count_requests_by_route(database_url: str, db_session: Session) -> None:
    app = create_app(make_settings(database_url, METRICS_ENABLED=True))
    use_session(app, db_session)
    with TestClient(app) as client:
        before = client.get("/metrics").text
        for _ in range(3):
            assert client.get("/health").status_code == 200
        client.get("/api/me/tasks/1")
        after = client.get("/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    labels = {"method": "GET", "route": "/health", "status": "200"}
    assert _metric(text, "http_requests_total", **labels) - _metric(before, "http_requests_total", **labels) == 3
    unauthorized = {"method": "GET", "route": "/api/{user_id}/tasks/{task_id}", "status": "401"}
    assert _metric(text, "http_requests_total", **unauthorized) >= 1
    assert _metric(text, "http_request_duration_seconds_count", route="/health") >= 3
    assert "db_pool_connections_in_use" in text


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "todo_api.audit"]


def test_auth_events_are_logged(client: TestClient, users: UserFactory, caplog: pytest.LogCaptureFixture) -> None:
    user = users.create()
    caplog.set_level(logging.INFO, logger="todo_api.audit")
    client.post("/api/auth/login", json={"email": user.email, "password": user.password})
    client.post("/api/auth/login", json={"email": user.email, "password": "not the password"})
    client.get("/api/auth/me", headers={"Authorization": "Bearer not.a.jwt"})
    client.post(
        "/api/auth/change-password",
        headers=user.headers,
        json={"current_password": user.password, "new_password": "a different long passphrase"},
    )
    client.get("/api/auth/me", headers=user.headers)  # its session ended with the password change
    events = _events(caplog)
    assert [e["event"] for e in events] == [
        "login_succeeded",
        "login_failed",
        "token_rejected",
        "password_changed",
        "token_rejected",
    ]
    assert events[0]["user_id"] == user.id and events[1]["user_id"] == user.id
    assert events[2]["reason"] == "DecodeError"
    assert events[4]["reason"] == "no_live_session"
    assert all(user.email not in json.dumps(e) for e in events)


def test_rate_limited_event_and_login_metrics(
    database_url: str, db_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        make_settings(database_url, METRICS_ENABLED=True, RATE_LIMIT_ENABLED=True, RATE_LIMIT_LOGIN_PER_EMAIL="1/hour")
    )
    use_session(app, db_session)
    caplog.set_level(logging.INFO, logger="todo_api.audit")
    with TestClient(app) as client:
        before = client.get("/metrics").text
        body = {"email": "nobody-metrics@example.com", "password": "some password"}
        assert client.post("/api/auth/login", json=body).status_code == 401
        assert client.post("/api/auth/login", json=body).status_code == 429
        after = client.get("/metrics").text
    for outcome in ("failure", "rate_limited"):
        delta = _metric(after, "auth_logins_total", outcome=outcome) - _metric(
            before, "auth_logins_total", outcome=outcome
        )
        assert delta == 1
    limited = [e for e in _events(caplog) if e["event"] == "rate_limited"]
    assert limited and limited[0]["limit"] == "login_failures"


def test_metrics_come_from_the_folder_the_settings_name(database_url: str, db_session: Session, tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, /metrics reports every process's samples written there (here another
    process's), not only this one's."""
    sample = "from prometheus_client import Counter; Counter('demo_events_total', 'Demo').inc(3)"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", sample], env=env, check=True, timeout=60)
    app = create_app(make_settings(database_url, METRICS_ENABLED=True, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)))
    use_session(app, db_session)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        response = client.get("/metrics")
    assert response.text == "# HELP demo_events_total Demo\n# TYPE demo_events_total counter\ndemo_events_total 3.0\n"
