"""Versions and ETags, If-Match (412 with the current task), If-None-Match (304), and racing writers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import LiveServer
from tests.factories import PASSWORD, UserFactory, bearer, unique_email
from tests.tasks.helpers import (
    MISSING_TASK_ID,
    Actor,
    assert_not_found,
    create_task,
    get_task,
    local_actor,
    tasks_url,
)


def if_match(value: str | list[str], actor: Actor) -> list[tuple[str, str]]:
    values = [value] if isinstance(value, str) else value
    return [*actor.headers.items(), *(("If-Match", v) for v in values)]


# Every conditional write: (method, path suffix, body). DELETE and restore are exercised in their own states.
WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PUT", "", {"title": "changed"}),
    ("PATCH", "", {"title": "changed"}),
    ("PATCH", "/complete", None),
    ("PATCH", "/complete", {"completed": True}),
    ("DELETE", "", None),
    ("DELETE", "?permanent=true", None),
]


def write(client: TestClient, method: str, url: str, body: dict[str, Any] | None, headers: Any) -> httpx.Response:
    return client.request(method, url, headers=headers, json=body)


# --- Versions and ETags ---


def test_every_change_bumps_the_version_and_the_etag(client: TestClient, actor: Actor) -> None:
    response = client.post(tasks_url("me"), headers=actor.headers, json={"title": "Draft"})
    assert response.status_code == 201
    assert response.json()["version"] == 1
    assert response.headers["etag"] == '"1"'
    task_id = response.json()["id"]

    steps: list[Callable[[], httpx.Response]] = [
        lambda: client.put(tasks_url("me", task_id), headers=actor.headers, json={"title": "Put"}),
        lambda: client.patch(tasks_url("me", task_id), headers=actor.headers, json={"priority": "high"}),
        lambda: client.patch(tasks_url("me", task_id, complete=True), headers=actor.headers),
        lambda: client.patch(tasks_url("me", task_id, complete=True), headers=actor.headers, json={"completed": False}),
        lambda: client.patch(tasks_url("me", task_id), headers=actor.headers, json={}),
    ]
    for expected, step in enumerate(steps, start=2):
        response = step()
        assert response.status_code == 200, response.text
        assert response.json()["version"] == expected
        assert response.headers["etag"] == f'"{expected}"'
        got = client.get(tasks_url("me", task_id), headers=actor.headers)
        assert got.headers["etag"] == f'"{expected}"'
        assert got.json() == response.json()


def test_the_list_carries_versions_but_no_etag(client: TestClient, actor: Actor) -> None:
    create_task(client, actor)
    response = client.get(tasks_url("me"), headers=actor.headers)
    assert response.json()[0]["version"] == 1
    assert "etag" not in response.headers


# --- If-Match ---


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
def test_a_current_if_match_applies_the_change(
    client: TestClient, actor: Actor, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    task = create_task(client, actor)
    response = write(client, method, tasks_url("me", task["id"]) + suffix, body, if_match('"1"', actor))
    assert response.status_code in (200, 204), response.text
    if response.status_code == 200:
        assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
@pytest.mark.parametrize(
    "stale", ['"1"', 'W/"2"', "2", '"two"', '"1", "3"', ['"1"', '"3"'], '"99999999999999999999"', ""]
)
def test_a_stale_if_match_is_412_with_the_current_task(
    client: TestClient,
    actor: Actor,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
    stale: str | list[str],
) -> None:
    task = create_task(client, actor, title="Original")
    edited = client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"description": "v2"})
    assert edited.headers["etag"] == '"2"'
    current = edited.json()

    response = write(client, method, tasks_url("me", task["id"]) + suffix, body, if_match(stale, actor))

    assert response.status_code == 412, response.text
    assert response.json() == current
    assert response.headers["etag"] == '"2"'
    # Nothing changed.
    assert get_task(client, actor, task["id"]) == current


@pytest.mark.parametrize("accepted", ["*", '"2"', '"1", "2"', ' "7" , "2" ', ['"5"', '"2"'], '"2", W/"3"'])
def test_if_match_star_and_lists_per_rfc_9110(client: TestClient, actor: Actor, accepted: str | list[str]) -> None:
    task = create_task(client, actor)
    client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"description": "v2"})
    response = client.patch(tasks_url("me", task["id"]), headers=if_match(accepted, actor), json={"title": "v3"})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 3
    assert response.headers["etag"] == '"3"'


def test_without_if_match_the_change_applies_as_before(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"title": "someone else"})
    response = client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"title": "mine"})
    assert response.status_code == 200
    assert response.json()["title"] == "mine"


def test_restore_honours_if_match(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    assert client.delete(tasks_url("me", task["id"]), headers=actor.headers).status_code == 204
    restore = tasks_url("me", task["id"]) + "/restore"

    stale = client.post(restore, headers=if_match('"1"', actor))
    assert stale.status_code == 412
    assert stale.headers["etag"] == '"2"'
    assert stale.json()["version"] == 2
    assert stale.json()["trashed_at"] is not None

    restored = client.post(restore, headers=if_match('"2"', actor))
    assert restored.status_code == 200
    assert restored.headers["etag"] == '"3"'
    assert restored.json()["trashed_at"] is None


def test_permanent_delete_of_a_trashed_task_honours_if_match(client: TestClient, actor: Actor) -> None:
    task = create_task(client, actor)
    client.delete(tasks_url("me", task["id"]), headers=actor.headers)
    url = tasks_url("me", task["id"]) + "?permanent=true"
    stale = client.delete(url, headers=if_match('"1"', actor))
    assert stale.status_code == 412
    assert stale.json()["trashed_at"] is not None
    assert client.delete(url, headers=if_match('"2"', actor)).status_code == 204
    assert client.delete(url, headers=actor.headers).status_code == 404


@pytest.mark.parametrize(("method", "suffix", "body"), [*WRITES, ("POST", "/restore", None)])
@pytest.mark.parametrize("condition", ['"1"', '"999"', "*"])
def test_if_match_on_a_missing_or_foreign_task_is_the_same_404(
    client: TestClient,
    users: UserFactory,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
    condition: str,
) -> None:
    """A 412 would tell the caller the task exists: preconditions are only evaluated on one's own tasks."""
    me, other = local_actor(users), local_actor(users)
    theirs = create_task(client, other)
    if suffix == "/restore":
        client.delete(tasks_url("me", theirs["id"]), headers=other.headers)
    foreign = write(client, method, tasks_url("me", theirs["id"]) + suffix, body, if_match(condition, me))
    foreign_path = write(client, method, tasks_url(other.id, theirs["id"]) + suffix, body, if_match(condition, me))
    missing = write(client, method, tasks_url("me", MISSING_TASK_ID) + suffix, body, if_match(condition, me))
    for response in (foreign, foreign_path, missing):
        assert_not_found(response)
        assert response.content == missing.content
        assert "etag" not in response.headers
    trashed = "true" if suffix == "/restore" else "false"
    untouched = client.get(tasks_url("me"), headers=other.headers, params={"trashed": trashed}).json()
    assert [(t["id"], t["version"]) for t in untouched] == [(theirs["id"], 2 if trashed == "true" else 1)]


# --- If-None-Match ---


@pytest.mark.parametrize("matching", ['"2"', 'W/"2"', "*", '"1", "2"', ['"7"', '"2"']])
def test_if_none_match_with_the_current_version_is_304(
    client: TestClient, actor: Actor, matching: str | list[str]
) -> None:
    task = create_task(client, actor)
    client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"title": "v2"})
    values = [matching] if isinstance(matching, str) else matching
    headers = [*actor.headers.items(), *(("If-None-Match", v) for v in values)]
    response = client.get(tasks_url("me", task["id"]), headers=headers)
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize("other", ['"1"', '"3"', "2", '"x"', ""])
def test_if_none_match_with_another_version_is_200(client: TestClient, actor: Actor, other: str) -> None:
    task = create_task(client, actor)
    client.patch(tasks_url("me", task["id"]), headers=actor.headers, json={"title": "v2"})
    response = client.get(tasks_url("me", task["id"]), headers={**actor.headers, "If-None-Match": other})
    assert response.status_code == 200
    assert response.json()["title"] == "v2"
    assert response.headers["etag"] == '"2"'


def test_if_none_match_on_a_foreign_task_is_404(client: TestClient, users: UserFactory) -> None:
    me, other = local_actor(users), local_actor(users)
    theirs = create_task(client, other)
    response = client.get(tasks_url("me", theirs["id"]), headers={**me.headers, "If-None-Match": "*"})
    assert_not_found(response)


# --- Real concurrency (live server, real commits) ---


def _live_user(http: httpx.Client) -> dict[str, str]:
    response = http.post(
        "/api/auth/register", json={"name": "Racer", "email": unique_email("race"), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    return bearer(response.json()["access_token"])


def _race(requests: list[Callable[[httpx.Client], httpx.Response]], server: LiveServer) -> list[httpx.Response]:
    """Run the requests at the same moment, each on its own connection."""
    barrier = threading.Barrier(len(requests))
    results: list[httpx.Response | BaseException] = [RuntimeError("not run")] * len(requests)

    def run(index: int) -> None:
        with server.client() as http:
            http.get("/health")  # connect before the start line
            barrier.wait()
            try:
                results[index] = requests[index](http)
            except BaseException as error:  # pragma: no cover - reported below
                results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    responses = []
    for result in results:
        assert isinstance(result, httpx.Response), result
        responses.append(result)
    return responses


def test_two_writers_with_the_same_if_match_cannot_both_win(live_server: LiveServer) -> None:
    with live_server.client() as http:
        headers = _live_user(http)
        for _ in range(5):
            created = http.post("/api/me/tasks", headers=headers, json={"title": f"race {uuid.uuid4().hex}"})
            task_id = created.json()["id"]
            url = f"/api/me/tasks/{task_id}"
            titles = ["left", "right"]
            responses = _race(
                [
                    lambda c, t=title, u=url: c.patch(u, headers={**headers, "If-Match": '"1"'}, json={"title": t})
                    for title in titles
                ],
                live_server,
            )
            assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
            winner = next(r for r in responses if r.status_code == 200).json()
            loser = next(r for r in responses if r.status_code == 412)
            assert winner["version"] == 2
            assert loser.json() == winner
            assert loser.headers["etag"] == '"2"'
            final = http.get(url, headers=headers).json()
            assert final == winner


def test_a_trash_and_an_edit_racing_on_one_version(live_server: LiveServer) -> None:
    with live_server.client() as http:
        headers = _live_user(http)
        created = http.post("/api/me/tasks", headers=headers, json={"title": f"race {uuid.uuid4().hex}"})
        url = f"/api/me/tasks/{created.json()['id']}"
        conditional = {**headers, "If-Match": '"1"'}
        responses = _race(
            [
                lambda c: c.delete(url, headers=conditional),
                lambda c: c.patch(url, headers=conditional, json={"completed": True}),
            ],
            live_server,
        )
        codes = [r.status_code for r in responses]
        # Trash first: the edit finds no live task (404). Edit first: the trash is stale (412).
        assert codes in ([204, 404], [412, 200]), [r.text for r in responses]
        trashed = codes[0] == 204
        assert (http.get(url, headers=headers).status_code == 404) is trashed


def test_concurrent_toggles_without_if_match_all_apply(live_server: LiveServer) -> None:
    """Without a precondition every toggle is its own atomic update: none is lost."""
    with live_server.client() as http:
        headers = _live_user(http)
        created = http.post("/api/me/tasks", headers=headers, json={"title": f"toggle {uuid.uuid4().hex}"})
        url = f"/api/me/tasks/{created.json()['id']}/complete"
        responses = _race([lambda c: c.patch(url, headers=headers) for _ in range(4)], live_server)
        assert [r.status_code for r in responses] == [200] * 4
        final = http.get(url.removesuffix("/complete"), headers=headers).json()
        assert final["version"] == 5
        assert final["completed"] is False
        assert final["completed_at"] is None


def test_bulk_and_single_writes_racing_keep_the_counts_exact(live_server: LiveServer) -> None:
    """The counts behind X-Total-Count change with every writer: racing ones must not deadlock or drift."""
    with live_server.client() as http:
        headers = _live_user(http)
        ids = []
        for n in range(12):
            created = http.post("/api/me/tasks", headers=headers, json={"title": f"t{n}", "priority": "high"})
            ids.append(created.json()["id"])

        def bulk(action: str, task_ids: list[int]) -> Callable[[httpx.Client], httpx.Response]:
            return lambda c: c.post("/api/me/tasks/bulk", headers=headers, json={"action": action, "ids": task_ids})

        def lower_priority(task_id: int) -> Callable[[httpx.Client], httpx.Response]:
            return lambda c: c.patch(f"/api/me/tasks/{task_id}", headers=headers, json={"priority": "low"})

        responses = _race(
            [
                bulk("delete", ids[:8]),
                bulk("complete", ids[::-1]),
                *(lower_priority(task_id) for task_id in ids[::-1][:6]),
                lambda c: c.post("/api/me/tasks", headers=headers, json={"title": "new", "category": "work"}),
            ],
            live_server,
        )
        assert all(r.status_code in (200, 201, 404) for r in responses), [r.text for r in responses]

        def total(**params: str) -> int:
            response = http.get("/api/me/tasks", headers=headers, params={**params, "limit": 500})
            assert int(response.headers["x-total-count"]) == len(response.json())
            return len(response.json())

        assert total() + total(trashed="true") == 13
        assert total(priority="high") + total(priority="low,medium") == total()
        assert total(status="completed") + total(status="pending") == total()
        stats = http.get("/api/me/stats", headers=headers).json()
        assert stats["total"] == total() and stats["completed"] == total(status="completed")
