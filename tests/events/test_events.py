"""Live changes over real HTTP: the SSE stream and its JSON twin, served by uvicorn on the test database."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy
from sqlalchemy import create_engine, inspect, text

from tests.auth.better_auth_frontend import FrontendUser, JWKSServer, new_key, plugin_payload, sign
from tests.conftest import LiveServer, make_settings
from tests.factories import PASSWORD, bearer, better_auth_token, unique_email
from todo_api.config import Settings, normalize_database_url
from todo_api.db import build_engine
from todo_api.events import router as events_router
from todo_api.main import create_app
from todo_api.migrations import downgrade, upgrade

FAST = {"EVENT_AUTH_CHECK_SECONDS": 0.3, "EVENT_HEARTBEAT_SECONDS": 0.5}


@dataclass
class Event:
    event: str
    data: str
    id: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Listener:
    """An open stream, read in a thread: its events (and comments) arrive in `received`."""

    response: httpx.Response
    received: queue.Queue[Event | str | None] = field(default_factory=queue.Queue)

    def next(self, timeout: float = 10) -> Event:
        while True:
            item = self.received.get(timeout=timeout)
            assert item is not None, "the stream ended"
            if isinstance(item, Event):
                return item

    def events(self, count: int, timeout: float = 10) -> list[Event]:
        return [self.next(timeout) for _ in range(count)]

    def nothing_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.received.get(timeout=left)
            except queue.Empty:
                return
            assert not isinstance(item, Event), item

    def ends(self, timeout: float = 10) -> list[Event | str]:
        """Everything until the stream ends."""
        seen: list[Event | str] = []
        while (item := self.received.get(timeout=timeout)) is not None:
            seen.append(item)
        return seen


class Client:
    def __init__(self, server: LiveServer, user_id: str, headers: dict[str, str]) -> None:
        self.server = server
        self.id = user_id
        self.headers = headers
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=30)
        self._streams: list[httpx.Client] = []

    def listen(self, path: str = "/api/me/events", headers: dict[str, str] | None = None, **params: Any) -> Listener:
        """Open a stream; returns once its status is known (the body is read in a thread)."""
        http = httpx.Client(base_url=self.server.url, timeout=httpx.Timeout(30, read=None))
        self._streams.append(http)
        request = http.build_request(
            "GET", path, headers=headers if headers is not None else self.headers, params=params
        )
        response = http.send(request, stream=True)
        listener = Listener(response)
        if response.status_code == 200:
            threading.Thread(target=_read_events, args=(listener,), daemon=True).start()
        return listener

    def close(self) -> None:
        for http in self._streams:
            http.close()
        self.http.close()


def _read_events(listener: Listener) -> None:
    fields: dict[str, str] = {}
    try:
        for line in listener.response.iter_lines():
            if line.startswith(":"):
                listener.received.put(line)
            elif line == "":
                if "event" in fields or "data" in fields:
                    event_id = fields.get("id")
                    listener.received.put(
                        Event(
                            fields.get("event", "message"), fields.get("data", ""), int(event_id) if event_id else None
                        )
                    )
                elif "retry" in fields:
                    listener.received.put(f"retry: {fields['retry']}")
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    except (httpx.HTTPError, RuntimeError):
        pass
    finally:
        listener.received.put(None)


def register(server: LiveServer) -> Client:
    with server.client() as http:
        response = http.post(
            "/api/auth/register", json={"name": "Ev", "email": unique_email("ev"), "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
    return Client(server, body["user"]["id"], bearer(body["access_token"]))


@pytest.fixture(scope="module")
def events_settings(database_url: str) -> Settings:
    return make_settings(database_url, **FAST)


@pytest.fixture(scope="module")
def server(events_settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(events_settings)) as live:
        yield live


@pytest.fixture
def alice(server: LiveServer) -> Iterator[Client]:
    client = register(server)
    yield client
    client.close()


@pytest.fixture
def bob(server: LiveServer) -> Iterator[Client]:
    client = register(server)
    yield client
    client.close()


# --- The stream ---


def test_every_change_is_one_event_in_order_with_the_task_as_the_api_returns_it(alice: Client) -> None:
    stream = alice.listen()
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert stream.response.headers["cache-control"] == "no-store"
    assert stream.response.headers["x-accel-buffering"] == "no"
    assert stream.received.get(timeout=10) == "retry: 3000"

    created = alice.http.post("/api/me/tasks", json={"title": "Write", "tags": ["b", "A"]})
    task_id = created.json()["id"]
    url = f"/api/me/tasks/{task_id}"
    answers = [
        created,
        alice.http.patch(url, json={"title": "Write more"}),
        alice.http.patch(f"{url}/complete"),
        alice.http.patch(f"{url}/complete"),
        alice.http.delete(url),
        alice.http.post(f"{url}/restore"),
    ]
    assert alice.http.delete(url, params={"permanent": "true"}).status_code == 204

    events = stream.events(7)
    assert [event.event for event in events] == [
        "task.created",
        "task.updated",
        "task.completed",
        "task.reopened",
        "task.trashed",
        "task.restored",
        "task.deleted",
    ]
    first = events[0].id
    assert first is not None and [event.id for event in events] == list(range(first, first + 7))
    # Byte for byte the task each write answered (the trash's 204 has no body: its event has the trashed task).
    for event, answer in zip(events, answers, strict=False):
        if answer.status_code == 200 or answer.status_code == 201:
            assert event.data.encode() == b'{"task":' + answer.content + b"}"
    assert events[4].json()["task"]["trashed_at"] is not None
    assert events[6].json() == {"task_id": task_id}


def test_bulk_actions_and_tag_renames_emit_one_event_per_task(alice: Client) -> None:
    ids = [alice.http.post("/api/me/tasks", json={"title": f"t{n}", "tags": ["x"]}).json()["id"] for n in range(3)]
    stream = alice.listen()
    assert alice.http.post("/api/me/tasks/bulk", json={"action": "complete", "ids": ids}).status_code == 200
    assert alice.http.patch("/api/me/tags/x", json={"name": "y"}).status_code == 200

    events = stream.events(6)
    assert [(event.event, event.json()["task"]["id"]) for event in events] == [
        *[("task.completed", task_id) for task_id in ids],
        *[("task.updated", task_id) for task_id in ids],
    ]
    assert all(event.json()["task"]["tags"] == ["y"] for event in events[3:])


def test_a_recurring_task_completed_creates_its_next_one_in_the_same_events(alice: Client) -> None:
    task = alice.http.post(
        "/api/me/tasks", json={"title": "Daily", "due_date": "2031-01-01T09:00:00Z", "recurrence": "FREQ=DAILY"}
    ).json()
    stream = alice.listen()
    completed = alice.http.patch(f"/api/me/tasks/{task['id']}/complete").json()

    events = stream.events(3)
    assert [event.event for event in events] == ["task.completed", "task.created", "task.updated"]
    assert events[1].json()["task"]["id"] == completed["next_task_id"]
    assert events[2].json()["task"] == completed


def test_reconnecting_with_last_event_id_gets_exactly_what_was_missed(alice: Client) -> None:
    stream = alice.listen()
    alice.http.post("/api/me/tasks", json={"title": "seen"})
    last_seen = stream.next()
    assert last_seen.id is not None
    stream.response.close()

    titles = [f"missed {n}" for n in range(5)]
    for title in titles:
        assert alice.http.post("/api/me/tasks", json={"title": title}).status_code == 201

    again = alice.listen(headers={**alice.headers, "Last-Event-ID": str(last_seen.id)})
    missed = again.events(5)
    assert [event.json()["task"]["title"] for event in missed] == titles
    assert [event.id for event in missed] == list(range(last_seen.id + 1, last_seen.id + 6))
    again.nothing_for(0.5)
    # Then live ones, with no gap.
    alice.http.post("/api/me/tasks", json={"title": "live"})
    assert again.next().id == last_seen.id + 6

    polled = alice.http.get("/api/me/events", params={"since": last_seen.id, "format": "json"})
    assert polled.status_code == 200
    assert polled.headers["cache-control"] == "no-store"
    assert [(event["id"], event["event"]) for event in polled.json()] == [
        (last_seen.id + n, "task.created") for n in range(1, 7)
    ]
    assert polled.json()[0]["data"]["task"]["title"] == "missed 0"


def test_a_write_that_is_rolled_back_emits_nothing(alice: Client) -> None:
    task = alice.http.post("/api/me/tasks", json={"title": "one"}).json()
    stream = alice.listen()
    url = f"/api/me/tasks/{task['id']}"
    assert alice.http.patch(url, json={"title": "two"}, headers={"If-Match": '"7"'}).status_code == 412
    assert alice.http.patch(url, json={"title": ""}).status_code == 422
    assert alice.http.patch(url, json={"recurrence": "FREQ=DAILY"}).status_code == 422  # no due date
    assert alice.http.post("/api/me/tasks/bulk", json={"action": "complete", "ids": [10**12]}).json() == {"updated": 0}
    stream.nothing_for(1.0)
    assert (
        alice.http.get("/api/me/events", params={"since": 0, "format": "json"}).json()[-1]["data"]["task"]["version"]
        == 1
    )


def test_old_events_mean_resync(events_settings: Settings, alice: Client) -> None:
    for n in range(3):
        alice.http.post("/api/me/tasks", json={"title": f"old {n}"})
    engine = build_engine(events_settings)
    with engine.begin() as conn:  # what EVENT_RETENTION does to them
        conn.execute(text("DELETE FROM task_events WHERE user_id = :u AND seq <= 2"), {"u": alice.id})
    engine.dispose()

    stream = alice.listen(since=0)
    resync = stream.next()
    assert (resync.event, resync.id, resync.json()) == ("resync", 3, {"last_event_id": 3})
    alice.http.post("/api/me/tasks", json={"title": "new"})
    assert stream.next().id == 4
    polled = alice.http.get("/api/me/events", params={"since": 1, "format": "json"}).json()
    # Reload, then go on from the latest event.
    assert polled == [{"id": 4, "event": "resync", "data": None}]
    # From the oldest kept event on, nothing is missing: no resync.
    assert [event["id"] for event in alice.http.get("/api/me/events?since=2&format=json").json()] == [3, 4]


def test_heartbeats_keep_an_idle_stream_open(alice: Client) -> None:
    stream = alice.listen()
    assert stream.received.get(timeout=5) == "retry: 3000"
    assert stream.received.get(timeout=5) == ": keepalive"


# --- Who may listen ---


def test_another_user_never_sees_the_callers_events(alice: Client, bob: Client) -> None:
    bobs = bob.listen()
    alice.http.post("/api/me/tasks", json={"title": "private"})
    bobs.nothing_for(1.0)
    assert bob.http.get(f"/api/{alice.id}/events").status_code == 404
    assert bob.http.get(f"/api/{alice.id}/events", params={"format": "json"}).json() == {"detail": "Task not found"}
    assert bob.http.get("/api/me/events", params={"since": 0, "format": "json"}).json() == []


def test_without_a_valid_token_401(server: LiveServer, alice: Client) -> None:
    with server.client() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, bearer(better_auth_token(alice.id, expires_in=-60))):
            response = http.get("/api/me/events", headers=headers)
            assert response.status_code == 401, response.text
        assert http.get("/api/me/events", headers={"Last-Event-ID": "x", **alice.headers}).status_code == 422
        # Beyond BIGINT: a client mistake, not a database error.
        for header in ("-1", "9" * 20, str(2**63)):
            too_big = http.get("/api/me/events", headers={"Last-Event-ID": header, **alice.headers})
            assert too_big.status_code == 422, (header, too_big.text)
            assert too_big.json() == {"detail": "Last-Event-ID must be an event id (a whole number)"}
        assert (
            http.get("/api/me/events", params={"since": 2**63, "format": "json"}, headers=alice.headers).status_code
            == 422
        )
        largest = http.get("/api/me/events", params={"since": 2**63 - 1, "format": "json"}, headers=alice.headers)
        assert (largest.status_code, largest.json()) == (200, [])


def test_logout_all_ends_an_open_stream_with_an_auth_event(alice: Client) -> None:
    stream = alice.listen()
    started = time.monotonic()
    assert alice.http.post("/api/auth/logout-all").status_code == 204
    seen = stream.ends(timeout=5)
    assert time.monotonic() - started < 5
    assert [(item.event, item.json()) for item in seen if isinstance(item, Event)] == [("auth", {"reason": "revoked"})]
    assert alice.http.get("/api/me/events").status_code == 401


def test_a_better_auth_token_streams_and_its_logout_ends_it(server: LiveServer) -> None:
    user = f"ba-{unique_email('s').split('@')[0]}"
    frontend = Client(server, user, bearer(better_auth_token(user, email=unique_email("ba"))))
    try:
        stream = frontend.listen()
        frontend.http.post("/api/me/tasks", json={"title": "from the frontend"})
        assert stream.next().json()["task"]["user_id"] == user
        assert frontend.http.post("/api/auth/logout").status_code == 204
        assert [item.event for item in stream.ends(timeout=5) if isinstance(item, Event)] == ["auth"]
    finally:
        frontend.close()


def test_a_stream_ends_when_its_token_expires(server: LiveServer) -> None:
    user = f"ba-{unique_email('x').split('@')[0]}"
    frontend = Client(server, user, bearer(better_auth_token(user, expires_in=2)))
    try:
        stream = frontend.listen()
        seen = stream.ends(timeout=8)
        assert [(item.event, item.json()) for item in seen if isinstance(item, Event)] == [
            ("auth", {"reason": "expired"})
        ]
    finally:
        frontend.close()


def test_a_ticket_works_once_within_60_seconds_on_the_events_route_only(
    server: LiveServer, events_settings: Settings, alice: Client
) -> None:
    issued = alice.http.post("/api/auth/stream-ticket")
    assert issued.status_code == 201
    assert set(issued.json()) == {"ticket", "expires_in"} and issued.json()["expires_in"] == 60
    ticket = issued.json()["ticket"]
    with server.client() as http:
        # Refused wherever else it is offered.
        assert http.get("/api/me/tasks", params={"ticket": ticket}).status_code == 401
        assert http.get("/api/auth/me", params={"ticket": ticket}).status_code == 401

    stream = alice.listen(headers={}, ticket=ticket)
    assert stream.response.status_code == 200
    alice.http.post("/api/me/tasks", json={"title": "via ticket"})
    assert stream.next().json()["task"]["title"] == "via ticket"
    with server.client() as http:
        assert http.get("/api/me/events", params={"ticket": ticket}).status_code == 401  # used

        late = alice.http.post("/api/auth/stream-ticket").json()["ticket"]
        engine = build_engine(events_settings)
        with engine.begin() as conn:  # 61 seconds later
            conn.execute(
                text("UPDATE stream_tickets SET expires_at = expires_at - INTERVAL '61 seconds'")
                if engine.dialect.name == "postgresql"
                else text("UPDATE stream_tickets SET expires_at = datetime(expires_at, '-61 seconds')")
            )
        engine.dispose()
        assert http.get("/api/me/events", params={"ticket": late}).status_code == 401
        assert http.post("/api/auth/stream-ticket").status_code == 401

    # A ticket stands for its session: logging out ends the ticket's stream too, and spoils an unused ticket.
    unused = alice.http.post("/api/auth/stream-ticket").json()["ticket"]
    assert alice.http.post("/api/auth/logout-all").status_code == 204
    assert [item.event for item in stream.ends(timeout=5) if isinstance(item, Event)] == ["auth"]
    with server.client() as http:
        assert http.get("/api/me/events", params={"ticket": unused}).status_code == 401


def test_the_eleventh_stream_of_one_user_is_a_429(alice: Client, bob: Client) -> None:
    streams = [alice.listen() for _ in range(10)]
    assert all(stream.response.status_code == 200 for stream in streams)
    eleventh = alice.listen()
    assert eleventh.response.status_code == 429
    assert int(eleventh.response.headers["retry-after"]) > 0
    assert bob.listen().response.status_code == 200  # per user
    streams[0].response.close()
    deadline = time.monotonic() + 5
    while (status := alice.listen().response.status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_shutdown_ends_every_stream_promptly(events_settings: Settings) -> None:
    app = create_app(events_settings)
    with LiveServer(app) as live:
        client = register(live)
        stream = client.listen()
        assert stream.received.get(timeout=5) == "retry: 3000"
        app.state.events.shut_down()  # what SIGTERM does, before uvicorn waits for open connections
        started = time.monotonic()
        stream.ends(timeout=5)
        assert time.monotonic() - started < 2
        client.close()


# --- Across instances ---


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def test_a_change_through_one_instance_reaches_a_stream_on_another(database_url: str) -> None:
    if not _redis_up():
        if os.environ.get("REQUIRE_SERVICES"):
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    # A long check interval: only Redis can bring the change across in time.
    settings = make_settings(
        database_url, REDIS_URL="redis://127.0.0.1:6379/0", EVENT_AUTH_CHECK_SECONDS=30, EVENT_HEARTBEAT_SECONDS=0.5
    )
    with LiveServer(create_app(settings)) as first, LiveServer(create_app(settings)) as second:
        writer = register(first)
        reader = Client(second, writer.id, writer.headers)
        try:
            stream = reader.listen()
            assert stream.received.get(timeout=5) == "retry: 3000"
            started = time.monotonic()
            for n in range(3):
                writer.http.post("/api/me/tasks", json={"title": f"across {n}"})
            events = stream.events(3, timeout=5)
            assert time.monotonic() - started < 3
            assert [event.json()["task"]["title"] for event in events] == [f"across {n}" for n in range(3)]
            assert [event.id for event in events] == [1, 2, 3]
        finally:
            writer.close()
            reader.close()


# --- The migration ---

EVENT_TRIGGERS = {"task_events_insert", "task_events_update", "task_events_delete"}


def _trigger_names(conn: Any) -> set[str]:
    if conn.dialect.name == "postgresql":
        query = "SELECT DISTINCT trigger_name FROM information_schema.triggers WHERE event_object_table = 'tasks'"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks'"
    return set(conn.execute(text(query)).scalars())


def test_the_migration_adds_the_outbox_and_reverses(scratch_database_url: str) -> None:
    url = scratch_database_url
    upgrade(url, "0007_tags_recurrence_checklists")
    engine = create_engine(normalize_database_url(url))
    if engine.dialect.name == "sqlite":  # as the service runs it: deleting a user deletes its tasks
        sqlalchemy.event.listen(
            engine, "connect", lambda dbapi_connection, _: dbapi_connection.execute("PRAGMA foreign_keys=ON")
        )
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO users (id, name, created_at, updated_at) VALUES ('u1', 'U', :now, :now)"),
                {"now": datetime(2026, 12, 5, tzinfo=UTC)},
            )
            conn.execute(
                text(
                    "INSERT INTO tasks (user_id, title, completed, priority, created_at, updated_at)"
                    " VALUES ('u1', 'before', false, 'low', :now, :now)"
                ),
                {"now": datetime(2026, 12, 5, tzinfo=UTC)},
            )
            before = _trigger_names(conn)
        upgrade(url, "0008_task_events")
        with engine.begin() as conn:
            assert _trigger_names(conn) == before | EVENT_TRIGGERS
            assert conn.execute(text("SELECT count(*) FROM task_events")).scalar() == 0  # no history is made up
            conn.execute(text("UPDATE tasks SET completed = true, version = version + 1"))
            conn.execute(text("DELETE FROM tasks"))
            events = conn.execute(text("SELECT seq, type, task_id FROM task_events ORDER BY seq")).all()
            assert [tuple(event) for event in events] == [(1, "task.completed", 1), (2, "task.deleted", 1)]
            # A task deleted with its user leaves no event.
            conn.execute(
                text(
                    "INSERT INTO tasks (user_id, title, completed, priority, created_at, updated_at)"
                    " VALUES ('u1', 'with the user', false, 'low', :now, :now)"
                ),
                {"now": datetime(2026, 12, 5, tzinfo=UTC)},
            )
            conn.execute(text("DELETE FROM users WHERE id = 'u1'"))
            assert conn.execute(text("SELECT max(seq) FROM task_events")).scalar() == 3  # the INSERT's, no more
        downgrade(url, "0007_tags_recurrence_checklists")
        with engine.begin() as conn:
            assert _trigger_names(conn) == before
            tables = set(inspect(conn).get_table_names())
            assert not tables & {"task_events", "event_counters", "stream_tickets"}
    finally:
        engine.dispose()


def test_a_client_too_far_behind_gets_resync_and_is_closed(alice: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bounds, small: read 5 events at a time, and at most 10 behind (10,000 in service).
    monkeypatch.setattr(events_router, "BATCH", 5)
    monkeypatch.setattr(events_router, "BEHIND_LIMIT", 10)
    for n in range(20):
        alice.http.post("/api/me/tasks", json={"title": f"backlog {n}"})
    last = alice.http.get("/api/me/events", params={"since": 0, "format": "json"}).json()[-1]["id"]

    seen = alice.listen(since=last - 20).ends(timeout=5)

    events = [item for item in seen if isinstance(item, Event)]
    assert [(event.event, event.id, event.json()) for event in events] == [("resync", last, {"last_event_id": last})]
    # Reconnecting from there, it is up to date.
    again = alice.listen(headers={**alice.headers, "Last-Event-ID": str(last)})
    alice.http.post("/api/me/tasks", json={"title": "after"})
    assert again.next().id == last + 1


def test_a_better_auth_jwks_token_streams(database_url: str) -> None:
    key = new_key("EdDSA")
    jwks = JWKSServer([key])
    try:
        settings = make_settings(database_url, BETTER_AUTH_URL=jwks.url, **FAST)
        with LiveServer(create_app(settings)) as frontend_backed:
            user = FrontendUser()
            token = sign(plugin_payload(user, iss=jwks.url, aud=jwks.url), key)
            client = Client(frontend_backed, user.id, bearer(token))
            try:
                stream = client.listen()
                client.http.post("/api/me/tasks", json={"title": "signed by the frontend's key"})
                assert stream.next().json()["task"]["user_id"] == user.id
            finally:
                client.close()
    finally:
        jwks.stop()


def test_a_change_made_by_an_ai_agent_is_an_event_too(alice: Client) -> None:
    stream = alice.listen()
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_task", "arguments": {"title": "from the agent"}},
    }
    headers = {**alice.headers, "Accept": "application/json, text/event-stream"}
    answer = alice.http.post("/mcp", json=call, headers=headers)
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["result"]["structuredContent"]["task_id"]

    event = stream.next()
    assert (event.event, event.json()["task"]["id"], event.json()["task"]["title"]) == (
        "task.created",
        task_id,
        "from the agent",
    )


def test_with_redis_down_writes_succeed_and_this_instances_streams_still_get_their_events(database_url: str) -> None:
    # Nothing listens on port 1: every publish and the subscription fail (logged, retried), nothing else does.
    settings = make_settings(database_url, REDIS_URL="redis://127.0.0.1:1/0", **FAST)
    with LiveServer(create_app(settings)) as lonely:
        client = register(lonely)
        try:
            stream = client.listen()
            created = client.http.post("/api/me/tasks", json={"title": "no redis"})
            assert created.status_code == 201
            assert stream.next().json()["task"] == created.json()
        finally:
            client.close()
