"""Tags, checklists and recurring tasks, over HTTP on the real database (both backends)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import LiveServer
from tests.factories import UserFactory
from tests.tasks.helpers import Actor, assert_validation_error, create_task, get_task, local_actor, tasks_url

TAG_NOT_FOUND = {"detail": "Tag not found"}


def _patch(client: TestClient, actor: Actor, task_id: int, **fields: Any) -> dict[str, Any]:
    response = client.patch(tasks_url("me", task_id), headers=actor.headers, json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _titles(client: TestClient, actor: Actor, query: str) -> tuple[list[str], str]:
    response = client.get(f"{tasks_url('me')}?{query}", headers=actor.headers)
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()], response.headers["x-total-count"]


def _assert_422(response: Any, words: str = "") -> None:
    """A 422 with FastAPI's `{"detail": ...}` body (a list from validation, a sentence from a check against stored
    data) that says what was wrong."""
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"detail"}
    assert words in response.text


def _tags(client: TestClient, actor: Actor) -> list[dict[str, Any]]:
    response = client.get("/api/me/tags", headers=actor.headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


# ------------------------------------------------------------------------------------------------------ tags


def test_tags_are_one_per_name_ignoring_case_kept_as_first_spelled_and_sorted(
    client: TestClient, users: UserFactory
) -> None:
    me = local_actor(users)
    task = create_task(client, me, tags=["Work", " home ", "work", "Zed", "apple"])
    assert task["tags"] == ["apple", "home", "Work", "Zed"]
    assert task["checklist"] == [] and task["recurrence"] is None and task["series_id"] is None

    untouched = _patch(client, me, task["id"], title="renamed")
    assert untouched["tags"] == ["apple", "home", "Work", "Zed"]
    replaced = _patch(client, me, task["id"], tags=["errand"])
    assert (replaced["tags"], replaced["version"]) == (["errand"], 3)
    assert _patch(client, me, task["id"], tags=[])["tags"] == []
    put = client.put(tasks_url("me", task["id"]), headers=me.headers, json={"title": "t", "tags": ["b", "A"]})
    assert put.json()["tags"] == ["A", "b"]


@pytest.mark.parametrize(
    ("tags", "loc"),
    [
        ([f"t{n}" for n in range(21)], ["body", "tags"]),
        (["x" * 41], ["body", "tags", 0]),
        ([" "], ["body", "tags", 0]),
        (["tab\there"], ["body", "tags", 0]),
        ([7], ["body", "tags", 0]),
        (None, ["body", "tags"]),
    ],
    ids=["21-tags", "41-characters", "blank", "control-character", "not-a-string", "null"],
)
def test_bad_tags_are_422_naming_the_field(
    client: TestClient, users: UserFactory, tags: Any, loc: list[str | int]
) -> None:
    me = local_actor(users)
    task = create_task(client, me, tags=["kept"])
    if tags is not None:
        assert_validation_error(
            client.post(tasks_url("me"), headers=me.headers, json={"title": "t", "tags": tags}), loc
        )
    response = client.patch(tasks_url("me", task["id"]), headers=me.headers, json={"tags": tags})
    assert_validation_error(response, loc)
    assert get_task(client, me, task["id"])["tags"] == ["kept"]  # nothing stored was lost


def test_tag_filters_combine_with_every_other_filter_and_the_total(client: TestClient, users: UserFactory) -> None:
    me, other = local_actor(users), local_actor(users)
    create_task(client, me, title="a", tags=["Work", "urgent"])
    create_task(client, me, title="b", tags=["work"], completed=True)
    create_task(client, me, title="c", tags=["home"])
    create_task(client, me, title="d")
    create_task(client, other, title="theirs", tags=["work"])

    assert _titles(client, me, "tag=work&sort_by=title&sort_order=asc") == (["a", "b"], "2")
    assert _titles(client, me, "tag=WORK&tag=Urgent") == (["a"], "1")
    assert _titles(client, me, "tag=work&status=pending") == (["a"], "1")
    assert _titles(client, me, "tag=work&tag=home") == ([], "0")
    assert _titles(client, me, "untagged=true") == (["d"], "1")
    assert _titles(client, me, "untagged=false&sort_by=title&sort_order=asc") == (["a", "b", "c"], "3")
    assert _titles(client, me, "tag=work&limit=1&sort_by=title&sort_order=asc") == (["a"], "2")
    assert _titles(client, me, "tag=work&limit=1&offset=1&sort_by=title&sort_order=asc") == (["b"], "2")
    assert _titles(client, me, "tag=nothing") == ([], "0")
    response = client.get(f"{tasks_url('me')}?tag=work&untagged=true", headers=me.headers)
    assert_validation_error(response)


def test_the_tag_list_counts_live_tasks_by_name(client: TestClient, users: UserFactory) -> None:
    me, other = local_actor(users), local_actor(users)
    create_task(client, me, tags=["work", "b"])
    create_task(client, me, tags=["Work"])
    trashed = create_task(client, me, tags=["work", "gone"])
    assert client.delete(tasks_url("me", trashed["id"]), headers=me.headers).status_code == 204
    create_task(client, other, tags=["secret"])

    assert _tags(client, me) == [{"name": "b", "count": 1}, {"name": "Work", "count": 2}]
    assert _tags(client, local_actor(users)) == []


def test_renaming_a_tag_changes_every_task_and_merges(client: TestClient, users: UserFactory) -> None:
    me, other = local_actor(users), local_actor(users)
    one = create_task(client, me, tags=["work", "x"])
    both = create_task(client, me, tags=["Work", "job"])
    untouched = create_task(client, me, tags=["home"])
    theirs = create_task(client, other, tags=["work"])

    response = client.patch("/api/me/tags/WORK", headers=me.headers, json={"name": "job"})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "job", "count": 2}

    assert get_task(client, me, one["id"])["tags"] == ["job", "x"]
    merged = get_task(client, me, both["id"])
    assert (merged["tags"], merged["version"]) == (["job"], 2)
    assert get_task(client, me, untouched["id"])["version"] == 1
    assert get_task(client, other, theirs["id"])["tags"] == ["work"]  # isolation
    assert _tags(client, me) == [{"name": "home", "count": 1}, {"name": "job", "count": 2}, {"name": "x", "count": 1}]


def test_deleting_a_tag_takes_it_off_every_task(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    task = create_task(client, me, tags=["work", "x"])
    trashed = create_task(client, me, tags=["work"])
    assert client.delete(tasks_url("me", trashed["id"]), headers=me.headers).status_code == 204

    response = client.delete("/api/me/tags/Work", headers=me.headers)
    assert (response.status_code, response.content) == (204, b"")
    changed = get_task(client, me, task["id"])
    assert (changed["tags"], changed["version"]) == (["x"], 2)
    trash = client.get(f"{tasks_url('me')}?trashed=true", headers=me.headers).json()
    assert [t["tags"] for t in trash] == [[]]


def test_an_unknown_or_another_users_tag_is_404(client: TestClient, users: UserFactory) -> None:
    me, other = local_actor(users), local_actor(users)
    create_task(client, other, tags=["theirs"])
    for response in (
        client.patch("/api/me/tags/theirs", headers=me.headers, json={"name": "mine"}),
        client.delete("/api/me/tags/theirs", headers=me.headers),
        client.delete("/api/me/tags/nothing", headers=me.headers),
        client.patch(f"/api/{other.id}/tags/theirs", headers=me.headers, json={"name": "mine"}),
    ):
        assert response.status_code == 404, response.text
    assert client.patch("/api/me/tags/nothing", headers=me.headers, json={"name": "x"}).json() == TAG_NOT_FOUND
    assert_validation_error(client.patch("/api/me/tags/x", headers=me.headers, json={"name": "y" * 41}))
    assert _tags(client, other) == [{"name": "theirs", "count": 1}]


def test_bulk_tag_and_untag(client: TestClient, users: UserFactory) -> None:
    me, other = local_actor(users), local_actor(users)
    a = create_task(client, me, tags=["x"])
    b = create_task(client, me, tags=["Later"])
    theirs = create_task(client, other)

    def bulk(**body: Any) -> Any:
        return client.post(tasks_url("me", "bulk"), headers=me.headers, json=body)

    response = bulk(action="tag", ids=[a["id"], b["id"], theirs["id"]], tag="later")
    assert (response.status_code, response.json()) == (200, {"updated": 1})
    assert get_task(client, me, a["id"])["tags"] == ["later", "x"]
    assert get_task(client, me, b["id"])["version"] == 1  # already had it
    assert get_task(client, other, theirs["id"])["tags"] == []
    assert bulk(action="untag", ids=[a["id"], b["id"]], tag="LATER").json() == {"updated": 2}
    assert [get_task(client, me, t["id"])["tags"] for t in (a, b)] == [["x"], []]
    assert_validation_error(bulk(action="tag", ids=[a["id"]]))
    assert_validation_error(bulk(action="complete", ids=[a["id"]], tag="x"))


# ------------------------------------------------------------------------------------------------- checklists


def test_a_checklist_keeps_its_order_and_is_replaced_by_patch(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    items = [{"title": "Zebra", "done": True}, {"title": " apple "}]
    task = create_task(client, me, checklist=items)
    assert task["checklist"] == [{"title": "Zebra", "done": True}, {"title": "apple", "done": False}]
    changed = _patch(client, me, task["id"], checklist=[{"title": "only", "done": True}])
    assert changed["checklist"] == [{"title": "only", "done": True}]
    assert _patch(client, me, task["id"], title="x")["checklist"] == [{"title": "only", "done": True}]


@pytest.mark.parametrize(
    ("checklist", "loc"),
    [
        ([{"title": f"i{n}"} for n in range(51)], ["body", "checklist"]),
        ([{"done": True}], ["body", "checklist", 0, "title"]),
        ([{"title": ""}], ["body", "checklist", 0, "title"]),
        ([{"title": "x" * 201}], ["body", "checklist", 0, "title"]),
    ],
    ids=["51-items", "no-title", "empty-title", "long-title"],
)
def test_bad_checklists_are_422(client: TestClient, users: UserFactory, checklist: Any, loc: list[str | int]) -> None:
    me = local_actor(users)
    response = client.post(tasks_url("me"), headers=me.headers, json={"title": "t", "checklist": checklist})
    assert_validation_error(response, loc)


# ----------------------------------------------------------------------------------------------- recurrence

FUTURE_MONDAY = "2027-03-01T08:00:00Z"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"recurrence": "FREQ=WEEKLY"}, "due_date"),
        ({"recurrence": "FREQ=HOURLY", "due_date": FUTURE_MONDAY}, "FREQ"),
        ({"recurrence": "FREQ=DAILY;BYHOUR=9", "due_date": FUTURE_MONDAY}, "BYHOUR"),
        ({"recurrence": "FREQ=DAILY;COUNT=0", "due_date": FUTURE_MONDAY}, "COUNT"),
        ({"recurrence": "FREQ=DAILY;UNTIL=20200101", "due_date": FUTURE_MONDAY}, "UNTIL"),
        ({"recurrence": "not a rule", "due_date": FUTURE_MONDAY}, ""),
        ({"recurrence": "FREQ=DAILY", "due_date": FUTURE_MONDAY, "time_zone": "Mars/Olympus"}, "time zone"),
        ({"recurrence": "FREQ=DAILY", "due_date": FUTURE_MONDAY, "recurrence_basis": "whenever"}, ""),
    ],
    ids=["no-due-date", "hourly", "byhour", "count-0", "until-past", "unparsable", "unknown-zone", "bad-basis"],
)
def test_bad_rules_are_422_saying_what_is_wrong(
    client: TestClient, users: UserFactory, fields: dict[str, Any], words: str
) -> None:
    me = local_actor(users)
    response = client.post(tasks_url("me"), headers=me.headers, json={"title": "t", **fields})
    assert_validation_error(response)
    assert words in response.text
    task = create_task(client, me)
    response = client.patch(tasks_url("me", task["id"]), headers=me.headers, json=fields)
    _assert_422(response, words)  # a PATCH too, even when the task has no due date to offer
    assert get_task(client, me, task["id"])["recurrence"] is None


def _complete(client: TestClient, actor: Actor, task_id: int) -> dict[str, Any]:
    response = client.patch(tasks_url("me", task_id, complete=True), headers=actor.headers, json={"completed": True})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_completing_a_recurring_task_creates_the_next_occurrence_once(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    first = create_task(
        client,
        me,
        title="Standup",
        description="notes",
        priority="high",
        category="work",
        tags=["team"],
        checklist=[{"title": "agenda", "done": True}],
        due_date=FUTURE_MONDAY,
        recurrence="rrule:freq=weekly;byday=mo,we",
        time_zone="Europe/Berlin",
    )
    assert (first["recurrence"], first["series_id"], first["next_task_id"]) == (
        "FREQ=WEEKLY;BYDAY=MO,WE",
        first["id"],
        None,
    )

    done = _complete(client, me, first["id"])
    assert done["completed"] is True and done["next_task_id"] is not None
    follower = get_task(client, me, done["next_task_id"])
    assert {k: follower[k] for k in ("title", "description", "priority", "category", "tags", "recurrence")} == {
        "title": "Standup",
        "description": "notes",
        "priority": "high",
        "category": "work",
        "tags": ["team"],
        "recurrence": "FREQ=WEEKLY;BYDAY=MO,WE",
    }
    assert follower["checklist"] == [{"title": "agenda", "done": False}]
    assert (follower["completed"], follower["series_id"], follower["time_zone"]) == (
        False,
        first["id"],
        "Europe/Berlin",
    )
    assert follower["due_date"] == "2027-03-03T08:00:00Z"  # Wednesday, 09:00 in Berlin
    assert get_task(client, me, first["id"]) == done

    # Reopen and complete again: the next task already exists, no second one.
    reopened = client.patch(tasks_url("me", first["id"], complete=True), headers=me.headers, json={"completed": False})
    assert reopened.json()["next_task_id"] == follower["id"]
    assert _complete(client, me, first["id"])["next_task_id"] == follower["id"]
    series = [t for t in client.get(tasks_url("me"), headers=me.headers).json() if t["series_id"] == first["id"]]
    assert len(series) == 2


@pytest.mark.parametrize("route", ["patch", "put", "toggle", "bulk"])
def test_every_completion_route_continues_the_series(client: TestClient, users: UserFactory, route: str) -> None:
    me = local_actor(users)
    task = create_task(client, me, due_date="2027-01-31T10:00:00Z", recurrence="FREQ=MONTHLY;BYMONTHDAY=31")
    url = tasks_url("me", task["id"])
    if route == "patch":
        client.patch(url, headers=me.headers, json={"completed": True})
    elif route == "put":
        client.put(url, headers=me.headers, json={"title": "A task", "completed": True})
    elif route == "toggle":
        client.patch(tasks_url("me", task["id"], complete=True), headers=me.headers)
    else:
        response = client.post(
            tasks_url("me", "bulk"), headers=me.headers, json={"action": "complete", "ids": [task["id"]]}
        )
        assert response.json() == {"updated": 1}
    done = get_task(client, me, task["id"])
    assert done["completed"] is True
    # February has no 31st: the next one is in March.
    assert get_task(client, me, done["next_task_id"])["due_date"] == "2027-03-31T10:00:00Z"


def test_a_daily_task_stays_at_its_local_time_across_both_dst_changes(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    task = create_task(
        client, me, due_date="2027-03-27T08:00:00Z", recurrence="FREQ=DAILY", time_zone="Europe/Berlin"
    )  # 09:00 CET
    following = get_task(client, me, _complete(client, me, task["id"])["next_task_id"])
    assert following["due_date"] == "2027-03-28T07:00:00Z"  # 09:00 CEST
    autumn = create_task(
        client, me, due_date="2027-10-30T07:00:00Z", recurrence="FREQ=DAILY", time_zone="Europe/Berlin"
    )  # 09:00 CEST
    following = get_task(client, me, _complete(client, me, autumn["id"])["next_task_id"])
    assert following["due_date"] == "2027-10-31T08:00:00Z"  # 09:00 CET


def test_count_bounds_the_series_and_null_ends_it(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    first = create_task(client, me, due_date=FUTURE_MONDAY, recurrence="FREQ=DAILY;COUNT=2")
    second = _complete(client, me, first["id"])["next_task_id"]
    assert get_task(client, me, second)["due_date"] == "2027-03-02T08:00:00Z"
    assert _complete(client, me, second)["next_task_id"] is None  # COUNT=2: two tasks in all

    ended = create_task(client, me, due_date=FUTURE_MONDAY, recurrence="FREQ=DAILY")
    stopped = _patch(client, me, ended["id"], recurrence=None)
    assert (stopped["recurrence"], stopped["series_id"]) == (None, ended["id"])
    assert _complete(client, me, ended["id"])["next_task_id"] is None


def test_completion_basis_restarts_from_the_day_it_was_done(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    task = create_task(
        client,
        me,
        due_date="2027-06-01T09:00:00Z",
        recurrence="FREQ=DAILY;INTERVAL=3",
        recurrence_basis="completion",
    )
    done = _complete(client, me, task["id"])
    completed_on = datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00")).date()
    expected = datetime.combine(completed_on + timedelta(days=3), datetime.min.time(), UTC).replace(hour=9)
    following = get_task(client, me, done["next_task_id"])
    assert following["due_date"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert following["recurrence_basis"] == "completion"


def test_a_rule_set_by_patch_is_checked_against_the_stored_due_date(client: TestClient, users: UserFactory) -> None:
    me = local_actor(users)
    undated = create_task(client, me)
    response = client.patch(tasks_url("me", undated["id"]), headers=me.headers, json={"recurrence": "FREQ=DAILY"})
    _assert_422(response, "a recurring task needs a due_date")
    dated = create_task(client, me, due_date=FUTURE_MONDAY)
    made = _patch(client, me, dated["id"], recurrence="FREQ=WEEKLY")
    assert (made["recurrence"], made["series_id"]) == ("FREQ=WEEKLY", dated["id"])
    # Removing the due date of a recurring task would leave the rule nothing to run on.
    response = client.patch(tasks_url("me", dated["id"]), headers=me.headers, json={"due_date": None})
    _assert_422(response, "a recurring task needs a due_date")
    assert get_task(client, me, dated["id"])["due_date"] == FUTURE_MONDAY


# ------------------------------------------------------------------------------------------------ concurrency


def test_a_rename_racing_with_a_bulk_tag_loses_neither(live_server: LiveServer) -> None:
    """Both change the tags of the same tasks: each locks them first, so neither overwrites the other's change."""
    with live_server.client() as http:
        user = UserFactory(http).create()  # type: ignore[arg-type]
        ids = [
            http.post("/api/me/tasks", json={"title": f"t{n}", "tags": ["a"]}, headers=user.headers).json()["id"]
            for n in range(30)
        ]
    results: list[int] = []

    def rename() -> None:
        with live_server.client() as http:
            results.append(http.patch("/api/me/tags/a", json={"name": "b"}, headers=user.headers).status_code)

    def bulk_tag() -> None:
        with live_server.client() as http:
            body = {"action": "tag", "ids": ids, "tag": "c"}
            results.append(http.post("/api/me/tasks/bulk", json=body, headers=user.headers).status_code)

    for _ in range(3):
        threads = [threading.Thread(target=rename), threading.Thread(target=bulk_tag)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        with live_server.client() as http:
            tags = {tuple(task["tags"]) for task in http.get("/api/me/tasks", headers=user.headers).json()}
            assert tags == {("b", "c")}, tags
            http.patch("/api/me/tags/b", json={"name": "a"}, headers=user.headers)
            http.post("/api/me/tasks/bulk", json={"action": "untag", "ids": ids, "tag": "c"}, headers=user.headers)
    assert set(results) == {200}
