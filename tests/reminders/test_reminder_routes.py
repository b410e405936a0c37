"""Reminders on tasks, push subscriptions (with the SSRF checks), notification channels and the feed's routes, over
HTTP on the test's rolled-back transaction. Delivery (the scheduler, real SMTP and push services) is in
test_delivery.py."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from py_vapid import Vapid
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlmodel import Session

from tests.conftest import make_settings
from tests.factories import UserFactory
from tests.netguard import stub_resolver
from tests.reminders.helpers import SUBJECT
from tests.reminders.push_service import BrowserSubscription
from tests.tasks.helpers import Actor, local_actor
from todo_api.config import Settings
from todo_api.db import Database
from todo_api.mail import reminder_message
from todo_api.main import create_app
from todo_api.reminders.push import application_server_key, load_vapid_key
from todo_api.reminders.scheduler import Scheduler

ME = "/api/me"
PUBLIC = "endpoint must be a public address (not loopback, private, link-local or reserved)"
SOON = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def alice(users: UserFactory) -> Actor:
    return local_actor(users)


@pytest.fixture
def bob(users: UserFactory) -> Actor:
    return local_actor(users)


def create(client: TestClient, actor: Actor, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{ME}/tasks", headers=actor.headers, json={"title": "Call the dentist", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def patch(client: TestClient, actor: Actor, task_id: int, **fields: Any) -> Any:
    return client.patch(f"{ME}/tasks/{task_id}", headers=actor.headers, json=fields)


def jobs(db_session: Session, task_id: int) -> list[tuple[int, str]]:
    """The armed reminders of a task (`reminder_jobs`, kept by triggers): (reminder id, fire_at as stored)."""
    rows = db_session.connection().execute(
        text("SELECT reminder_id, fire_at FROM reminder_jobs WHERE task_id = :t ORDER BY reminder_id"), {"t": task_id}
    )
    return [(int(row[0]), str(row[1])) for row in rows]


# --- Reminders on a task ---


def test_a_task_returns_its_reminders_with_ids_and_fire_times(client: TestClient, alice: Actor) -> None:
    at = SOON - timedelta(hours=3)
    task = create(client, alice, due_date=iso(SOON), reminders=[{"before_due": 30}, {"at": iso(at)}])

    assert task["reminders"] == [
        {"id": 1, "fire_at": iso(SOON - timedelta(minutes=30)), "fired_at": None, "before_due": 30},
        {"at": iso(at), "id": 2, "fire_at": iso(at), "fired_at": None},
    ]
    listed = client.get(f"{ME}/tasks", headers=alice.headers).json()
    assert listed[0]["reminders"] == task["reminders"]
    assert client.get(f"{ME}/tasks/{task['id']}", headers=alice.headers).json() == task


@pytest.mark.parametrize(
    ("reminders", "message"),
    [
        ([{"before_due": 10}], "a reminder with before_due needs a due_date"),
        ([{}], 'a reminder is either {"at": <date-time>} or {"before_due": <minutes>}'),
        ([{"at": "2026-12-24T09:00:00Z", "before_due": 5}], 'a reminder is either {"at": <date-time>}'),
        ([{"before_due": 40321}], "less than or equal to 40320"),
        ([{"before_due": -1}], "greater than or equal to 0"),
        ([{"at": "2026-12-24T09:00:00Z"}] * 6, "at most 5 items"),
        ([{"at": "tomorrow"}], "valid datetime"),
        ("soon", "valid list"),
    ],
)
def test_bad_reminders_are_a_422_that_says_why(client: TestClient, alice: Actor, reminders: Any, message: str) -> None:
    response = client.post(f"{ME}/tasks", headers=alice.headers, json={"title": "x", "reminders": reminders})

    assert response.status_code == 422, response.text
    assert message in messages(response.json())


def messages(body: dict[str, Any]) -> str:
    detail = body["detail"]
    return detail if isinstance(detail, str) else " | ".join(error["msg"] for error in detail)


def test_moving_the_due_date_moves_relative_reminders_and_arms_them_again(
    client: TestClient, alice: Actor, db_session: Session
) -> None:
    at = SOON + timedelta(days=1)
    task = create(client, alice, due_date=iso(SOON), reminders=[{"before_due": 60}, {"at": iso(at)}])
    assert [job[0] for job in jobs(db_session, task["id"])] == [1, 2]

    later = SOON + timedelta(days=3)
    moved = patch(client, alice, task["id"], due_date=iso(later))

    assert moved.status_code == 200, moved.text
    assert moved.json()["reminders"] == [
        {"id": 1, "fire_at": iso(later - timedelta(hours=1)), "fired_at": None, "before_due": 60},
        {"at": iso(at), "id": 2, "fire_at": iso(at), "fired_at": None},
    ]
    assert moved.json()["version"] == task["version"] + 1
    assert [job[0] for job in jobs(db_session, task["id"])] == [1, 2]

    # Moved into the past: kept, not armed (nothing fires for a time already gone).
    past = patch(client, alice, task["id"], due_date=iso(datetime.now(UTC) - timedelta(days=1)))
    assert past.status_code == 200, past.text
    assert [job[0] for job in jobs(db_session, task["id"])] == [2]

    # A relative reminder cannot outlive the due date.
    cleared = patch(client, alice, task["id"], due_date=None)
    assert cleared.status_code == 422
    assert cleared.json() == {"detail": "a reminder with before_due needs a due_date"}
    assert patch(client, alice, task["id"], due_date=None, reminders=[{"at": iso(at)}]).status_code == 200


def test_a_new_list_replaces_the_old_and_unchanged_reminders_keep_their_ids(client: TestClient, alice: Actor) -> None:
    task = create(client, alice, due_date=iso(SOON), reminders=[{"before_due": 10}, {"before_due": 20}])
    sent_back = [task["reminders"][1], {"at": iso(SOON - timedelta(days=1))}]  # as returned, plus a new one

    replaced = client.put(f"{ME}/tasks/{task['id']}", headers=alice.headers, json={"reminders": sent_back})

    assert replaced.status_code == 200, replaced.text
    assert [(item["id"], item.get("before_due"), item.get("at")) for item in replaced.json()["reminders"]] == [
        (2, 20, None),
        (3, None, iso(SOON - timedelta(days=1))),
    ]
    assert patch(client, alice, task["id"], reminders=[]).json()["reminders"] == []


def test_completing_or_trashing_cancels_and_reopening_or_restoring_arms_again(
    client: TestClient, alice: Actor, db_session: Session
) -> None:
    task = create(client, alice, due_date=iso(SOON), reminders=[{"before_due": 5}])
    url = f"{ME}/tasks/{task['id']}"
    armed = jobs(db_session, task["id"])
    assert len(armed) == 1

    assert patch(client, alice, task["id"], completed=True).status_code == 200
    assert jobs(db_session, task["id"]) == []
    assert patch(client, alice, task["id"], completed=False).status_code == 200
    assert jobs(db_session, task["id"]) == armed
    assert client.delete(url, headers=alice.headers).status_code == 204
    assert jobs(db_session, task["id"]) == []
    assert client.post(f"{url}/restore", headers=alice.headers).status_code == 200
    assert jobs(db_session, task["id"]) == armed


def test_the_next_occurrence_carries_the_relative_reminders_only(client: TestClient, alice: Actor) -> None:
    task = create(
        client,
        alice,
        due_date=iso(SOON),
        recurrence="FREQ=DAILY",
        reminders=[{"before_due": 15}, {"at": iso(SOON - timedelta(hours=5))}],
    )

    done = patch(client, alice, task["id"], completed=True).json()
    follower = client.get(f"{ME}/tasks/{done['next_task_id']}", headers=alice.headers).json()

    next_due = SOON + timedelta(days=1)
    assert follower["due_date"] == iso(next_due)
    assert follower["reminders"] == [
        {"id": 1, "fire_at": iso(next_due - timedelta(minutes=15)), "fired_at": None, "before_due": 15}
    ]


# --- Notification channels ---


def test_notification_channels_default_to_both_and_can_be_chosen(client: TestClient, alice: Actor) -> None:
    assert client.get("/api/auth/me", headers=alice.headers).json()["notification_channels"] == ["email", "push"]

    chosen = client.patch("/api/auth/me", headers=alice.headers, json={"notification_channels": ["push", "push"]})

    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["notification_channels"] == ["push"]
    assert client.get("/api/auth/me", headers=alice.headers).json()["notification_channels"] == ["push"]
    assert (
        client.patch("/api/auth/me", headers=alice.headers, json={"notification_channels": []}).json()[
            "notification_channels"
        ]
        == []
    )
    for bad in (["sms"], "email", None):
        refused = client.patch("/api/auth/me", headers=alice.headers, json={"notification_channels": bad})
        assert refused.status_code == 422, refused.text


# --- Push subscriptions ---


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Names resolve from this table only: no test here asks DNS."""
    yield stub_resolver(
        monkeypatch,
        {
            "push.example.com": ["93.184.215.14"],
            "internal.example.com": ["10.1.2.3"],
            "metadata.example.com": ["169.254.169.254"],
            "mixed.example.com": ["93.184.215.14", "192.168.1.9"],
            "v6private.example.com": ["fd00::1"],
            "mapped.example.com": ["::ffff:127.0.0.1"],
        },
    )


def subscription(endpoint: str) -> dict[str, Any]:
    return BrowserSubscription().subscription(endpoint)


def test_subscribing_lists_updates_and_deletes(client: TestClient, alice: Actor) -> None:
    url = f"{ME}/push-subscriptions"
    first = client.post(url, headers=alice.headers, json=subscription("https://push.example.com/send/a"))

    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {"id", "endpoint", "created_at", "updated_at"}  # the keys never come back
    assert body["endpoint"] == "https://push.example.com/send/a"
    again = client.post(url, headers=alice.headers, json=subscription("https://push.example.com/send/a"))
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]
    assert client.get(url, headers=alice.headers).json() == [again.json()]

    assert client.delete(f"{url}/{body['id']}", headers=alice.headers).status_code == 204
    assert client.get(url, headers=alice.headers).json() == []
    gone = client.delete(f"{url}/{body['id']}", headers=alice.headers)
    assert gone.status_code == 404
    assert gone.json() == {"detail": "Push subscription not found"}


def test_at_most_ten_subscriptions(client: TestClient, alice: Actor) -> None:
    url = f"{ME}/push-subscriptions"
    for n in range(10):
        created = client.post(url, headers=alice.headers, json=subscription(f"https://push.example.com/s/{n}"))
        assert created.status_code == 201, created.text

    eleventh = client.post(url, headers=alice.headers, json=subscription("https://push.example.com/s/10"))

    assert eleventh.status_code == 409
    assert eleventh.json() == {"detail": "at most 10 push subscriptions per user; delete one first"}
    assert client.post(url, headers=alice.headers, json=subscription("https://push.example.com/s/3")).status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("https://127.0.0.1/push", PUBLIC),
        ("https://[::1]/push", PUBLIC),
        ("https://localhost/push", PUBLIC),
        ("http://push.example.com/push", "endpoint must be an https:// URL"),
        ("ftp://push.example.com/push", "endpoint must be an https:// URL"),
        ("https://internal.example.com/push", PUBLIC),
        ("https://metadata.example.com/latest/meta-data", PUBLIC),
        ("https://169.254.169.254/latest", PUBLIC),
        ("https://mixed.example.com/push", PUBLIC),
        ("https://v6private.example.com/push", PUBLIC),
        ("https://mapped.example.com/push", PUBLIC),
        ("https://user:pw@push.example.com/push", "endpoint must not carry credentials"),
        ("https://nowhere.example.com/push", "endpoint's host does not resolve"),
        ("https://push.example.com:99999/push", "endpoint must be a valid URL"),
    ],
)
def test_an_endpoint_the_server_may_not_contact_is_a_422(
    client: TestClient, alice: Actor, endpoint: str, message: str
) -> None:
    response = client.post(f"{ME}/push-subscriptions", headers=alice.headers, json=subscription(endpoint))

    assert response.status_code == 422, response.text
    assert response.json() == {"detail": message}
    assert client.get(f"{ME}/push-subscriptions", headers=alice.headers).json() == []


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"p256dh": "not base64!", "auth": "tBHItJI5svbpez7KI4CCXg"}, "keys.p256dh must be"),
        ({"p256dh": "AAAA", "auth": "tBHItJI5svbpez7KI4CCXg"}, "keys.p256dh must be 65 bytes"),
        ({"p256dh": "BA" + "A" * 85, "auth": "tBHItJI5svbpez7KI4CCXg"}, "keys.p256dh is not a P-256 public key"),
        ({"auth": "tBHItJI5svbpez7KI4CCXg"}, "Field required"),
    ],
)
def test_bad_keys_are_a_422(client: TestClient, alice: Actor, keys: Any, message: str) -> None:
    good = subscription("https://push.example.com/k")
    response = client.post(
        f"{ME}/push-subscriptions", headers=alice.headers, json={"endpoint": good["endpoint"], "keys": keys}
    )

    assert response.status_code == 422, response.text
    assert message in messages(response.json())


def test_the_public_key_is_a_404_when_push_is_not_configured(client: TestClient) -> None:
    response = client.get("/api/push/public-key")

    assert response.status_code == 404
    assert response.json() == {"detail": "Web Push is not configured on this server"}


# --- Isolation ---


def test_another_users_subscriptions_and_notifications_are_404(client: TestClient, alice: Actor, bob: Actor) -> None:
    mine = client.post(
        f"{ME}/push-subscriptions", headers=alice.headers, json=subscription("https://push.example.com/alice")
    ).json()

    for method, path in (
        ("GET", f"/api/{alice.id}/push-subscriptions"),
        ("POST", f"/api/{alice.id}/push-subscriptions"),
        ("DELETE", f"/api/{alice.id}/push-subscriptions/{mine['id']}"),
        ("GET", f"/api/{alice.id}/notifications"),
        ("POST", f"/api/{alice.id}/notifications/read-all"),
        ("POST", f"/api/{alice.id}/notifications/1/read"),
    ):
        response = client.request(method, path, headers=bob.headers, json=subscription("https://push.example.com/b"))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"detail": "Not found"} or response.json()["detail"].endswith("not found")

    missing = client.delete(f"{ME}/push-subscriptions/{mine['id']}", headers=bob.headers)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Push subscription not found"}
    assert client.get(f"{ME}/push-subscriptions", headers=alice.headers).json() == [mine]
    read = client.post(f"{ME}/notifications/{2**63}/read", headers=bob.headers)
    assert read.status_code == 404
    assert read.json() == {"detail": "Notification not found"}


def test_an_empty_feed(client: TestClient, alice: Actor) -> None:
    response = client.get(f"{ME}/notifications", headers=alice.headers, params={"unread": "true"})

    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "0"
    assert client.post(f"{ME}/notifications/read-all", headers=alice.headers).status_code == 204
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"unread": "maybe"}):
        assert client.get(f"{ME}/notifications", headers=alice.headers, params=bad).status_code == 422


def test_a_reminder_email_has_a_one_line_subject_whatever_the_title(settings: Settings) -> None:
    message = reminder_message(
        settings, to="a@example.com", title="Line one\r\nBcc: evil@example.com\n\ttwo", due=None, fire_at="now"
    )

    assert message["Subject"] == "Reminder: Line one Bcc: evil@example.com two"
    assert message["Bcc"] is None
    assert "Line one\nBcc: evil@example.com" in message.get_content()  # in the body it is text, not a header


def test_the_feed_pages_newest_first_and_marks_read(
    client: TestClient, alice: Actor, bob: Actor, db_session: Session
) -> None:
    """Three notifications of Alice's (as the scheduler stores them) and one of Bob's."""
    fire = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    for owner, n in ((alice, 1), (alice, 2), (bob, 3), (alice, 4)):
        db_session.connection().execute(
            text(
                "INSERT INTO notifications (user_id, type, task_id, reminder_id, title, due_date, fire_at, created_at)"
                " VALUES (:u, 'reminder', :t, 1, :title, NULL, :fire, :fire)"
            ),
            {"u": owner.id, "t": 1000 + n, "title": f"task {n}", "fire": fire + timedelta(minutes=n)},
        )
    url = f"{ME}/notifications"

    first = client.get(url, headers=alice.headers, params={"limit": 2})

    assert first.status_code == 200
    assert first.headers["X-Total-Count"] == "3"
    assert first.headers["Link"] == f'<http://testserver{url}?offset=2&limit=2>; rel="next"'
    assert [item["task_id"] for item in first.json()] == [1004, 1002]
    assert first.json()[0] == {
        "id": first.json()[0]["id"],
        "type": "reminder",
        "task_id": 1004,
        "reminder_id": 1,
        "title": "task 4",
        "due_date": None,
        "fire_at": iso(fire + timedelta(minutes=4)),
        "created_at": iso(fire + timedelta(minutes=4)),
        "read_at": None,
    }
    second = client.get(url, headers=alice.headers, params={"limit": 2, "offset": 2})
    assert [item["task_id"] for item in second.json()] == [1001]
    assert second.headers["Link"] == f'<http://testserver{url}?offset=0&limit=2>; rel="prev"'

    newest = first.json()[0]["id"]
    read = client.post(f"{url}/{newest}/read", headers=alice.headers)
    assert read.status_code == 200
    assert read.json()["read_at"] is not None
    again = client.post(f"{url}/{newest}/read", headers=alice.headers)
    assert again.json()["read_at"] == read.json()["read_at"]  # the first reading stays
    unread = client.get(url, headers=alice.headers, params={"unread": "true"})
    assert [item["task_id"] for item in unread.json()] == [1002, 1001]
    assert unread.headers["X-Total-Count"] == "2"

    assert client.post(f"{url}/read-all", headers=alice.headers).status_code == 204
    assert client.get(url, headers=alice.headers, params={"unread": "true"}).json() == []
    bobs = client.get(url, headers=bob.headers, params={"unread": "true"}).json()
    assert [item["task_id"] for item in bobs] == [1003]  # Alice's read-all left Bob's alone
    assert client.post(f"{url}/{bobs[0]['id']}/read", headers=alice.headers).status_code == 404


# --- Push settings ---


def test_push_settings_are_checked_at_start(database_url: str, vapid_pem: str) -> None:
    raw = Vapid.from_pem(vapid_pem.encode()).private_key.private_numbers().private_value.to_bytes(32, "big")
    as_base64url = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    pem_key = application_server_key(load_vapid_key(vapid_pem))
    assert application_server_key(load_vapid_key(as_base64url)) == pem_key  # the same key, either form

    for overrides, message in (
        ({"VAPID_PRIVATE_KEY": "not a key", "VAPID_SUBJECT": SUBJECT}, "VAPID_PRIVATE_KEY is not a P-256 private key"),
        ({"VAPID_PRIVATE_KEY": vapid_pem[:-40], "VAPID_SUBJECT": SUBJECT}, "VAPID_PRIVATE_KEY is not a P-256"),
        ({"VAPID_PRIVATE_KEY": as_base64url}, "VAPID_PRIVATE_KEY needs VAPID_SUBJECT"),
        ({"VAPID_PRIVATE_KEY": vapid_pem}, "VAPID_PRIVATE_KEY needs VAPID_SUBJECT"),
        ({"VAPID_PRIVATE_KEY": vapid_pem, "VAPID_SUBJECT": "ops@example.com"}, "VAPID_SUBJECT must be a mailto:"),
        ({"PUSH_ALLOW_PRIVATE_ENDPOINTS": True, "ENVIRONMENT": "production"}, "cannot be on when ENVIRONMENT"),
    ):
        with pytest.raises(ValidationError) as refused:
            make_settings(database_url, **overrides)
        assert message in str(refused.value)
        key = "".join(vapid_pem.splitlines()[1:-1]) + as_base64url
        assert not any(key[i : i + 8] in str(refused.value) for i in range(len(key) - 8))  # no piece of the key


def test_the_public_key_is_served_when_push_is_configured(database_url: str, vapid_pem: str) -> None:
    settings = make_settings(database_url, VAPID_PRIVATE_KEY=vapid_pem, VAPID_SUBJECT=SUBJECT)
    with TestClient(create_app(settings)) as http:
        response = http.get("/api/push/public-key")

    assert response.status_code == 200
    assert response.json() == {"public_key": application_server_key(load_vapid_key(vapid_pem))}
    assert len(base64.urlsafe_b64decode(response.json()["public_key"] + "=")) == 65  # an uncompressed P-256 point


# --- The scheduler's pace ---


@pytest.mark.parametrize(
    ("round_trip", "cpu_per_send", "in_flight"),
    [
        (0.100, 0.0005, 8),  # a push service 100 ms away: every send REMINDER_SEND_CONCURRENCY allows
        (0.001, 0.0005, 3),  # one on this machine: more would only queue, here or there
        (0.0001, 0.0005, 2),  # never fewer than two
        (1.0, 0.0, 8),  # nothing measured yet
    ],
)
def test_sends_in_flight_cover_a_round_trip(
    database_url: str, round_trip: float, cpu_per_send: float, in_flight: int
) -> None:
    scheduler = Scheduler(
        Database(create_engine("sqlite://"), make_settings(database_url)), make_settings(database_url)
    )
    scheduler._round_trip, scheduler._cpu_per_send = round_trip, cpu_per_send

    assert scheduler._in_flight_limit() == in_flight
