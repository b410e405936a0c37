"""GET /api/{user_id}/stats: counts over the live tasks, "today" in the caller's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from tests.factories import UserFactory
from tests.tasks.helpers import (
    ACTOR_PAIRS,
    Actor,
    assert_not_found,
    assert_validation_error,
    create_task,
    new_actor,
    tasks_url,
)

EMPTY = {
    "total": 0,
    "pending": 0,
    "completed": 0,
    "overdue": 0,
    "due_today": 0,
    "completion_rate": 0,
    "by_priority": {"low": 0, "medium": 0, "high": 0},
    "by_category": {},
}


def stats(client: TestClient, actor: Actor, **params: str) -> dict[str, object]:
    response = client.get("/api/me/stats", headers=actor.headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_no_tasks(client: TestClient, actor: Actor) -> None:
    assert stats(client, actor) == EMPTY


def test_counts(client: TestClient, actor: Actor) -> None:
    now = datetime.now(UTC)
    create_task(client, actor, priority="high", category="Work", due_date=(now - timedelta(days=3)).isoformat())
    create_task(client, actor, priority="high", category="Work", completed=True)
    create_task(client, actor, priority="low", category="work")
    create_task(client, actor, priority="medium", due_date=(now + timedelta(days=3)).isoformat())
    create_task(client, actor, priority="medium", category="uncategorized", completed=True)
    create_task(client, actor, priority="low", completed=True, due_date=(now - timedelta(days=3)).isoformat())
    assert stats(client, actor) == {
        "total": 6,
        "pending": 3,
        "completed": 3,
        "overdue": 1,  # completed tasks are never overdue
        "due_today": 0,
        "completion_rate": 0.5,
        "by_priority": {"low": 2, "medium": 2, "high": 2},
        # Categories as stored (case kept); no category counts as "uncategorized".
        "by_category": {"Work": 2, "uncategorized": 3, "work": 1},
    }


def test_completion_rate_is_a_fraction(client: TestClient, actor: Actor) -> None:
    for done in (True, False, False):
        create_task(client, actor, completed=done)
    assert stats(client, actor)["completion_rate"] == pytest.approx(1 / 3)
    create_task(client, actor, completed=True)
    assert stats(client, actor)["completion_rate"] == 0.5


def test_stats_follow_changes(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor, priority="low")
    client.patch(tasks_url("me", task["id"], complete=True), headers=actor.headers)
    client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"priority": "high", "category": "x"})
    body = stats(client, actor)
    assert body["completed"] == 1 and body["completion_rate"] == 1
    assert body["by_priority"] == {"low": 0, "medium": 0, "high": 1}
    assert body["by_category"] == {"x": 1}


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu", "Europe/London"])
def test_due_today_follows_the_time_zone(client: TestClient, actor: Actor, zone: str) -> None:
    now = datetime.now(UTC)
    dues = [now + timedelta(hours=h) for h in (-30, -13, -6, -1, 1, 6, 13, 30)]
    for due in dues:
        create_task(client, actor, due_date=due.isoformat())
        create_task(client, actor, due_date=due.isoformat(), completed=True)  # never counted
    local_today = now.astimezone(ZoneInfo(zone)).date()
    expected_today = sum(due.astimezone(ZoneInfo(zone)).date() == local_today for due in dues)
    body = stats(client, actor, tz=zone)
    assert body["due_today"] == expected_today
    assert body["overdue"] == 4
    assert body["total"] == 16 and body["pending"] == 8


def test_the_default_time_zone_is_utc(client: TestClient, actor: Actor) -> None:
    now = datetime.now(UTC)
    create_task(client, actor, due_date=now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat())
    create_task(
        client,
        actor,
        due_date=(now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)).isoformat(),
    )
    assert stats(client, actor)["due_today"] == 1
    assert stats(client, actor, tz="")["due_today"] == 1
    assert stats(client, actor) == stats(client, actor, tz="UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "utc+2", "../../../etc/passwd", "Europe/", "x" * 300])
def test_unknown_time_zone_is_422(client: TestClient, actor: Actor, zone: str) -> None:
    response = client.get("/api/me/stats", headers=actor.headers, params={"tz": zone})
    assert_validation_error(response, ["query", "tz"])
    assert "unknown time zone" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
def test_stats_are_per_user(client: TestClient, users: UserFactory, pair: tuple[str, str]) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    create_task(client, other, priority="high", category="secret")
    create_task(client, me, priority="low")
    body = stats(client, me)
    assert body["total"] == 1
    assert body["by_category"] == {"uncategorized": 1}


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
def test_another_users_stats_are_the_same_404_as_a_missing_task(
    client: TestClient, users: UserFactory, pair: tuple[str, str]
) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    create_task(client, other)
    missing = client.get(tasks_url("me", 2**63 - 1), headers=me.headers)
    for query in ("", "?tz=Europe/Berlin", "?tz=Nowhere"):
        response = client.get(f"/api/{other.id}/stats{query}", headers=me.headers)
        assert_not_found(response)
        assert response.content == missing.content


def test_stats_need_a_token(client: TestClient) -> None:
    response = client.get("/api/me/stats")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
