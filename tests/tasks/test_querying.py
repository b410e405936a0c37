"""GET /api/{user_id}/tasks: filters, search, sorting, paging, their headers, and 422s for bad values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.factories import UserFactory
from tests.tasks.helpers import (
    ACTOR_PAIRS,
    TASK_KEYS,
    Actor,
    assert_not_found,
    assert_validation_error,
    create_task,
    new_actor,
    tasks_url,
)

NOW = datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def listing(client: TestClient, actor: Actor, **params: Any) -> httpx.Response:
    response = client.get(tasks_url("me"), headers=actor.headers, params=params)
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)
    return response


def ids(response: httpx.Response) -> list[int]:
    return [task["id"] for task in response.json()]


def listed(client: TestClient, actor: Actor, **params: Any) -> list[int]:
    return ids(listing(client, actor, **params))


def detail_messages(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    return " | ".join(error["msg"] for error in response.json()["detail"])


# --- The default listing ---


def test_default_listing_is_every_live_task_newest_first_with_a_total(client: TestClient, actor: Actor) -> None:
    created = [create_task(client, actor, title=f"Task {n}")["id"] for n in range(3)]
    response = listing(client, actor)
    assert ids(response) == created[::-1]
    assert response.headers["x-total-count"] == "3"
    assert "link" not in response.headers


def test_empty_listing(client: TestClient, actor: Actor) -> None:
    response = listing(client, actor)
    assert response.json() == []
    assert response.headers["x-total-count"] == "0"
    assert "link" not in response.headers


def test_empty_values_are_the_same_as_absent_parameters(client: TestClient, actor: Actor) -> None:
    created = [create_task(client, actor)["id"] for _ in range(2)]
    params = dict.fromkeys(("status", "completed", "priority", "category", "search", "sort_by", "tz"), "")
    assert listed(client, actor, **params, limit="", offset="") == created[::-1]


def test_unknown_parameters_are_ignored(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    assert listed(client, actor, colour="blue") == [task["id"]]


# --- Paging ---


def test_limit_and_offset_page_through_the_results(client: TestClient, actor: Actor) -> None:
    created = [create_task(client, actor, title=f"Task {n}")["id"] for n in range(5)][::-1]
    assert listed(client, actor, limit=2) == created[:2]
    assert listed(client, actor, limit=2, offset=2) == created[2:4]
    assert listed(client, actor, limit=2, offset=4) == created[4:]
    assert listed(client, actor, limit=2, offset=5) == []
    assert listed(client, actor, limit=500, offset=1) == created[1:]


@pytest.mark.parametrize("extra", [{}, {"priority": "high"}, {"search": "task"}], ids=["counted", "filtered", "search"])
def test_the_first_page_total_is_exact_around_the_limit(
    client: TestClient, actor: Actor, extra: dict[str, Any]
) -> None:
    # A first page that holds every match is its own total; one match more and the total is counted.
    create_task(client, actor, title="Other", priority="low")
    for count in (2, 3, 4):
        while len(listed(client, actor, limit=500, **extra)) < count:
            create_task(client, actor, title="Task", priority="high")
        response = listing(client, actor, limit=2, **extra)
        expected_total = count  # "Other" counts only in the unfiltered listing, which the loop above includes
        assert response.headers["x-total-count"] == str(expected_total)
        assert len(response.json()) == 2
        assert ('rel="next"' in response.headers.get("link", "")) is (expected_total > 2)
        fits = listing(client, actor, limit=expected_total, **extra)
        assert fits.headers["x-total-count"] == str(expected_total)
        assert "link" not in fits.headers


def test_link_header_has_absolute_next_and_prev_urls(client: TestClient, actor: Actor) -> None:
    for n in range(5):
        create_task(client, actor, title=f"Task {n}", priority="high")
    base = "http://testserver/api/me/tasks?priority=high"

    first = listing(client, actor, priority="high", limit=2)
    assert first.headers["x-total-count"] == "5"
    assert first.headers["link"] == f'<{base}&offset=2&limit=2>; rel="next"'

    middle = listing(client, actor, priority="high", limit=2, offset=2)
    assert middle.headers["link"] == (f'<{base}&offset=4&limit=2>; rel="next", <{base}&offset=0&limit=2>; rel="prev"')

    last = listing(client, actor, priority="high", limit=2, offset=4)
    assert last.headers["link"] == f'<{base}&offset=2&limit=2>; rel="prev"'

    # An offset past the end still links back to the last page.
    beyond = listing(client, actor, priority="high", limit=2, offset=50)
    assert beyond.json() == []
    assert beyond.headers["x-total-count"] == "5"
    assert beyond.headers["link"] == f'<{base}&offset=3&limit=2>; rel="prev"'


def test_link_urls_keep_repeated_parameters(client: TestClient, actor: Actor) -> None:
    for priority in ("low", "high", "medium"):
        create_task(client, actor, priority=priority)
    response = client.get(tasks_url("me") + "?priority=low&priority=high&limit=1", headers=actor.headers)
    assert response.headers["x-total-count"] == "2"
    assert response.headers["link"] == (
        '<http://testserver/api/me/tasks?priority=low&priority=high&offset=1&limit=1>; rel="next"'
    )


def test_the_link_urls_lead_to_the_same_pages(client: TestClient, actor: Actor) -> None:
    created = [create_task(client, actor, title=f"Task {n}")["id"] for n in range(5)][::-1]
    url: str | None = tasks_url("me") + "?limit=2"
    seen: list[int] = []
    while url:
        response = client.get(url, headers=actor.headers)
        seen += ids(response)
        links = {
            part.split(";")[1].strip(): part.split(";")[0].strip(" <>")
            for part in response.headers.get("link", "").split(",")
            if part
        }
        url = links.get('rel="next"')
    assert seen == created


SORTS = ["created_at", "updated_at", "due_date", "priority", "title", "completed_at"]


@pytest.mark.parametrize("sort_by", SORTS)
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
def test_every_page_of_every_sort_is_a_slice_of_the_whole(
    client: TestClient, actor: Actor, sort_by: str, sort_order: str
) -> None:
    """Pages read from either end (deep offsets are read backwards) agree with the full listing."""
    for n, (priority, due_days, done) in enumerate(
        [
            ("low", 3, True),
            ("high", None, False),
            ("medium", -2, True),
            ("high", 3, False),
            ("low", None, True),
            ("medium", 1, False),
            ("high", -2, False),
        ]
    ):
        due = iso(NOW + timedelta(days=due_days)) if due_days is not None else None
        create_task(client, actor, title=f"Task {n % 3}", priority=priority, due_date=due, completed=done)
    whole = listed(client, actor, sort_by=sort_by, sort_order=sort_order, limit=500)
    assert len(whole) == 7
    for limit in (1, 2, 3):
        pages: list[int] = []
        for offset in range(0, 7, limit):
            pages += listed(client, actor, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset)
        assert pages == whole, (limit, pages, whole)
    for offset in range(8):
        assert (
            listed(client, actor, sort_by=sort_by, sort_order=sort_order, limit=2, offset=offset)
            == (whole[offset : offset + 2])
        )


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 501}, ["query", "limit"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"offset": 2**31}, ["query", "offset"]),
        ({"offset": "1.5"}, ["query", "offset"]),
    ],
)
def test_paging_bounds(client: TestClient, actor: Actor, params: dict[str, Any], loc: list[str]) -> None:
    response = client.get(tasks_url("me"), headers=actor.headers, params=params)
    assert_validation_error(response, loc)


def test_paging_extremes_are_accepted(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    assert listed(client, actor, limit=500) == [task["id"]]
    response = listing(client, actor, limit=1, offset=2**31 - 1)
    assert response.json() == []
    assert response.headers["x-total-count"] == "1"


# --- Filters ---


def test_status_and_completed_filters(client: TestClient, actor: Actor) -> None:
    pending = create_task(client, actor, title="pending")["id"]
    done = create_task(client, actor, title="done", completed=True)["id"]
    assert listed(client, actor, status="pending") == [pending]
    assert listed(client, actor, status="completed") == [done]
    assert listed(client, actor, status="all") == [done, pending]
    assert listed(client, actor, status="PENDING") == [pending]
    assert listed(client, actor, completed="true") == [done]
    assert listed(client, actor, completed="false") == [pending]
    # Agreeing pairs are fine; status=all leaves the completed filter in charge.
    assert listed(client, actor, status="pending", completed="false") == [pending]
    assert listed(client, actor, status="completed", completed="true") == [done]
    assert listed(client, actor, status="all", completed="true") == [done]
    response = listing(client, actor, status="completed")
    assert response.headers["x-total-count"] == "1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "pending", "completed": "true"}, "status=pending contradicts completed=true"),
        ({"status": "completed", "completed": "false"}, "status=completed contradicts completed=false"),
        ({"overdue": "true", "status": "completed"}, "overdue=true matches pending tasks only"),
        ({"overdue": "true", "completed": "true"}, "overdue=true matches pending tasks only"),
        (
            {"due_after": "2026-05-02", "due_before": "2026-05-01"},
            "due_after must be earlier than due_before",
        ),
        (
            {"due_after": "2026-05-01T00:00:00Z", "due_before": "2026-05-01T00:00:00Z"},
            "due_after must be earlier than due_before",
        ),
    ],
)
def test_contradictory_pairs_are_422_with_a_clear_detail(
    client: TestClient, actor: Actor, params: dict[str, str], message: str
) -> None:
    response = client.get(tasks_url("me"), headers=actor.headers, params=params)
    assert_validation_error(response, ["query"])
    assert message in detail_messages(response)


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "done"}, ["query", "status"]),
        ({"completed": "maybe"}, ["query", "completed"]),
        ({"priority": "urgent"}, ["query", "priority", 0]),
        ({"priority": "low,urgent"}, ["query", "priority", 1]),
        ({"overdue": "sometimes"}, ["query", "overdue"]),
        ({"trashed": "perhaps"}, ["query", "trashed"]),
        ({"sort_by": "colour"}, ["query", "sort_by"]),
        ({"sort_by": "id; DROP TABLE tasks"}, ["query", "sort_by"]),
        ({"sort_order": "sideways"}, ["query", "sort_order"]),
        ({"category": "x" * 51}, ["query", "category"]),
        ({"search": "a\x00b"}, ["query", "search"]),
        ({"search": "x" * 1001}, ["query", "search"]),
        ({"tz": "Mars/Olympus_Mons"}, ["query", "tz"]),
        ({"tz": "../../etc/passwd"}, ["query", "tz"]),
        ({"due_after": "tomorrow"}, ["query", "due_after"]),
        ({"due_before": "2026-13-01"}, ["query", "due_before"]),
        ({"due_before": "2026-02-30"}, ["query", "due_before"]),
        ({"updated_since": "yesterday"}, ["query", "updated_since"]),
        ({"updated_since": "9999-12-31T23:00:00-02:00"}, ["query", "updated_since"]),
    ],
)
def test_bad_values_are_422_never_500(
    client: TestClient, actor: Actor, params: dict[str, str], loc: list[str | int]
) -> None:
    response = client.get(tasks_url("me"), headers=actor.headers, params=params)
    assert_validation_error(response, loc)


def test_unknown_time_zone_says_so(client: TestClient, actor: Actor) -> None:
    response = client.get(tasks_url("me"), headers=actor.headers, params={"tz": "Europe/Atlantis"})
    assert "unknown time zone" in detail_messages(response)


def test_priority_accepts_one_several_or_repeated_values(client: TestClient, actor: Actor) -> None:
    low, medium, high = (create_task(client, actor, priority=p)["id"] for p in ("low", "medium", "high"))
    assert listed(client, actor, priority="high") == [high]
    assert listed(client, actor, priority="low,high") == [high, low]
    assert listed(client, actor, priority=" Low , HIGH ,") == [high, low]
    assert listed(client, actor, priority=["low", "medium"]) == [medium, low]
    assert listed(client, actor, priority=["low,medium", "high"]) == [high, medium, low]


def test_category_is_an_exact_case_insensitive_match(client: TestClient, actor: Actor) -> None:
    work = create_task(client, actor, category="Work")["id"]
    upper = create_task(client, actor, category="WORK")["id"]
    create_task(client, actor, category="Homework")
    create_task(client, actor)
    assert listed(client, actor, category="work") == [upper, work]
    assert listed(client, actor, category=" wOrK ") == [upper, work]
    assert listed(client, actor, category="wor") == []


def test_overdue_means_pending_and_due_before_now(client: TestClient, actor: Actor) -> None:
    late = create_task(client, actor, due_date=iso(NOW - timedelta(hours=1)))["id"]
    late_but_done = create_task(client, actor, due_date=iso(NOW - timedelta(days=1)), completed=True)["id"]
    upcoming = create_task(client, actor, due_date=iso(NOW + timedelta(days=1)))["id"]
    undated = create_task(client, actor)["id"]
    assert listed(client, actor, overdue="true") == [late]
    assert listed(client, actor, overdue="false") == [undated, upcoming, late_but_done]
    assert listed(client, actor, overdue="true", status="pending") == [late]
    assert listed(client, actor, overdue="false", status="completed") == [late_but_done]


def test_due_range_with_datetimes_is_inclusive_then_exclusive(client: TestClient, actor: Actor) -> None:
    at = {h: create_task(client, actor, due_date=f"2026-05-01T{h:02d}:00:00Z")["id"] for h in (8, 9, 10, 11)}
    create_task(client, actor)  # no due date: never matches a due filter
    assert listed(client, actor, due_after="2026-05-01T09:00:00Z") == [at[11], at[10], at[9]]
    assert listed(client, actor, due_before="2026-05-01T10:00:00Z") == [at[9], at[8]]
    assert listed(client, actor, due_after="2026-05-01T09:00:00Z", due_before="2026-05-01T11:00:00Z") == [
        at[10],
        at[9],
    ]
    # Naive is UTC; an offset is honoured, also when the "+" arrived unencoded (as a space).
    assert listed(client, actor, due_after="2026-05-01T10:00:00") == [at[11], at[10]]
    assert listed(client, actor, due_after="2026-05-01T12:00:00+02:00") == [at[11], at[10]]
    response = client.get(tasks_url("me") + "?due_after=2026-05-01T12:00:00+02:00", headers=actor.headers)
    assert ids(response) == [at[11], at[10]]


def test_due_range_with_dates_uses_the_start_of_day_in_tz(client: TestClient, actor: Actor) -> None:
    # 23:30 UTC on 30 April is already 1 May in Berlin (UTC+2 in May) but not in New York.
    late_evening = create_task(client, actor, due_date="2026-04-30T23:30:00Z")["id"]
    may_first = create_task(client, actor, due_date="2026-05-01T12:00:00Z")["id"]
    may_second = create_task(client, actor, due_date="2026-05-02T12:00:00Z")["id"]
    day = {"due_after": "2026-05-01", "due_before": "2026-05-02"}
    assert listed(client, actor, **day) == [may_first]
    assert listed(client, actor, **day, tz="UTC") == [may_first]
    assert listed(client, actor, **day, tz="Europe/Berlin") == [may_first, late_evening]
    assert listed(client, actor, **day, tz="America/New_York") == [may_first]
    assert listed(client, actor, due_after="2026-05-02", tz="Asia/Tokyo") == [may_second]


def test_search_is_a_case_insensitive_substring_of_title_or_description(client: TestClient, actor: Actor) -> None:
    title = create_task(client, actor, title="Buy MILK and bread")["id"]
    description = create_task(client, actor, title="Groceries", description="remember the milk")["id"]
    create_task(client, actor, title="Call mum", description="about the weekend")
    assert listed(client, actor, search="milk") == [description, title]
    assert listed(client, actor, search="Milk And") == [title]
    assert listed(client, actor, search="weekend plans") == []
    assert listing(client, actor, search="milk").headers["x-total-count"] == "2"


def test_search_follows_every_edit(client: TestClient, actor: Actor) -> None:
    """Search reads lower-cased copies of title and description that the database keeps: every write that changes
    them (create, a partial or a full update, clearing the description) is seen by the next search, and the copies are
    never part of a task's JSON."""
    task = create_task(client, actor, title="Pay rent", description="Before the FIRST")
    assert listed(client, actor, search="first") == [task["id"]]
    assert listed(client, actor, search="invoice") == []

    response = client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"title": "Pay the INVOICE"})
    assert response.status_code == 200, response.text
    assert listed(client, actor, search="invoice") == [task["id"]]
    assert listed(client, actor, search="rent") == []

    put = {"title": "Call Sam", "description": "About the Garden"}
    response = client.put(tasks_url("me", task["id"]), headers=actor.headers, json=put)
    assert response.status_code == 200, response.text
    assert listed(client, actor, search="garden") == [task["id"]]
    assert listed(client, actor, search="invoice") == []

    response = client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"description": None})
    assert response.status_code == 200, response.text
    assert listed(client, actor, search="garden") == []
    assert listed(client, actor, search="sam") == [task["id"]]

    other = create_task(client, actor, title="Sam's BIRTHDAY")["id"]
    assert listed(client, actor, search="sam") == [other, task["id"]]
    assert all(set(listed_task) == TASK_KEYS for listed_task in listing(client, actor, search="sam").json())


@pytest.mark.parametrize("term", ["%", "_", "\\", "50%", "a_b", "c:\\temp"])
def test_search_is_literal(client: TestClient, actor: Actor, term: str) -> None:
    tasks = {
        text: create_task(client, actor, title=f"item {text}")["id"]
        for text in ("50% off", "a_b", "axb", "c:\\temp", "plain")
    }
    expected = sorted((tid for text, tid in tasks.items() if term in f"item {text}"), reverse=True)
    assert expected, term
    assert listed(client, actor, search=term) == expected


def test_search_folds_case_beyond_ascii_on_postgresql(client: TestClient, actor: Actor, is_postgres: bool) -> None:
    task = create_task(client, actor, title="Réunion ÉCOLE Straße")["id"]
    assert listed(client, actor, search="réunion") == [task]  # ASCII letters fold everywhere
    if not is_postgres:
        pytest.skip("SQLite folds ASCII letters only")
    assert listed(client, actor, search="école") == [task]
    assert listed(client, actor, search="RÉUNION") == [task]


def test_filters_combine(client: TestClient, actor: Actor) -> None:
    """ "My overdue high-priority work tasks", plus the near misses that must stay out."""
    yesterday = iso(NOW - timedelta(days=1))
    wanted = create_task(client, actor, title="Ship it", priority="high", category="work", due_date=yesterday)
    create_task(client, actor, title="Ship it", priority="low", category="work", due_date=yesterday)
    create_task(client, actor, title="Ship it", priority="high", category="home", due_date=yesterday)
    create_task(client, actor, title="Ship it", priority="high", category="work", due_date=yesterday, completed=True)
    create_task(
        client,
        actor,
        title="Ship it",
        priority="high",
        category="work",
        due_date=iso(NOW + timedelta(days=1)),
    )
    create_task(client, actor, title="Other", priority="high", category="work", due_date=yesterday)
    params = {
        "overdue": "true",
        "priority": "high",
        "category": "Work",
        "search": "ship",
        "status": "pending",
    }
    response = listing(client, actor, **params)
    assert ids(response) == [wanted["id"]]
    assert response.json() == [wanted]
    assert response.headers["x-total-count"] == "1"


# --- Sorting ---


def test_sort_by_priority_uses_rank_and_ties_break_by_id(client: TestClient, actor: Actor) -> None:
    low1, high1, medium, high2, low2 = (
        create_task(client, actor, priority=p)["id"] for p in ("low", "high", "medium", "high", "low")
    )
    assert listed(client, actor, sort_by="priority") == [high2, high1, medium, low2, low1]
    assert listed(client, actor, sort_by="priority", sort_order="asc") == [low1, low2, medium, high1, high2]


@pytest.mark.parametrize("sort_by", ["due_date", "dueDate", "DueDate", "due_Date"])
def test_sort_by_due_date_puts_undated_tasks_last_both_ways(client: TestClient, actor: Actor, sort_by: str) -> None:
    undated1 = create_task(client, actor)["id"]
    later = create_task(client, actor, due_date="2026-06-01T00:00:00Z")["id"]
    undated2 = create_task(client, actor)["id"]
    sooner = create_task(client, actor, due_date="2026-05-01T00:00:00Z")["id"]
    same_as_sooner = create_task(client, actor, due_date="2026-05-01T00:00:00Z")["id"]
    assert listed(client, actor, sort_by=sort_by, sort_order="asc") == [
        sooner,
        same_as_sooner,
        later,
        undated1,
        undated2,
    ]
    assert listed(client, actor, sort_by=sort_by, sort_order="desc") == [
        later,
        same_as_sooner,
        sooner,
        undated2,
        undated1,
    ]
    assert listed(client, actor, sort_by=sort_by) == listed(client, actor, sort_by=sort_by, sort_order="DESC")


def test_sort_by_completed_at_puts_open_tasks_last_both_ways(client: TestClient, actor: Actor) -> None:
    open_task = create_task(client, actor)["id"]
    first = create_task(client, actor, completed=True)["id"]
    second = create_task(client, actor, completed=True)["id"]
    assert listed(client, actor, sort_by="completedAt", sort_order="asc") == [first, second, open_task]
    assert listed(client, actor, sort_by="completed_at", sort_order="desc") == [second, first, open_task]


def test_sort_by_title_ignores_case(client: TestClient, actor: Actor) -> None:
    banana = create_task(client, actor, title="banana")["id"]
    apple = create_task(client, actor, title="Apple")["id"]
    cherry = create_task(client, actor, title="cherry")["id"]
    apple2 = create_task(client, actor, title="apple")["id"]
    assert listed(client, actor, sort_by="title", sort_order="asc") == [apple, apple2, banana, cherry]
    assert listed(client, actor, sort_by="title", sort_order="desc") == [cherry, banana, apple2, apple]


def test_sort_by_created_and_updated_at(client: TestClient, actor: Actor) -> None:
    first, second, third = (create_task(client, actor, title=f"Task {n}")["id"] for n in range(3))
    assert client.patch(tasks_url("me", first), headers=actor.headers, json={"title": "edited"}).status_code == 200
    assert listed(client, actor, sortBy="ignored", sort_by="createdAt", sort_order="asc") == [
        first,
        second,
        third,
    ]
    assert listed(client, actor, sort_by="updated_at") == [first, third, second]
    assert listed(client, actor, sort_by="updatedAt", sort_order="asc") == [second, third, first]


# --- Isolation ---


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
def test_other_users_tasks_never_match_any_filter(
    client: TestClient, users: UserFactory, pair: tuple[str, str]
) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    mine = create_task(client, me, title="shared words", priority="high", category="work")["id"]
    create_task(client, other, title="shared words", priority="high", category="work")
    for params in (
        {},
        {"search": "shared"},
        {"priority": "high"},
        {"category": "work"},
        {"sort_by": "title"},
        {"updated_since": "2000-01-01"},
        {"trashed": "false"},
    ):
        response = listing(client, me, **params)
        assert ids(response) == [mine], params
        assert response.headers["x-total-count"] == "1"


@pytest.mark.parametrize("pair", ACTOR_PAIRS)
@pytest.mark.parametrize("query", ["", "?priority=high&sort_by=due_date", "?status=done&limit=0", "?tz=Nowhere"])
def test_another_users_listing_is_the_same_404_as_a_missing_task(
    client: TestClient, users: UserFactory, pair: tuple[str, str], query: str
) -> None:
    me, other = (new_actor(kind, client, users) for kind in pair)
    create_task(client, other)
    response = client.get(tasks_url(other.id) + query, headers=me.headers)
    assert_not_found(response)
    missing = client.get(tasks_url("me", 2**63 - 1), headers=me.headers)
    assert response.content == missing.content
    assert "x-total-count" not in response.headers


def test_the_parameters_are_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    parameters = {p["name"] for p in spec["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]}
    assert parameters == {
        "user_id",
        "tz",
        "status",
        "completed",
        "priority",
        "category",
        "overdue",
        "due_after",
        "due_before",
        "updated_since",
        "search",
        "trashed",
        "tag",
        "untagged",
        "sort_by",
        "sort_order",
        "limit",
        "offset",
    }
