"""The MCP server (`/mcp`) over real HTTP: the SDK's own client against the served app, the REST API beside it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from sqlalchemy.exc import OperationalError, ProgrammingError

from tests.auth.better_auth_frontend import FrontendUser, JWKSServer, new_key, plugin_payload, sign
from tests.conftest import LiveServer, make_settings
from tests.factories import PASSWORD, bearer, better_auth_token, unique_email
from todo_api.agents.tools import NOTHING_TO_UPDATE, TOOLS, answers
from todo_api.config import Settings
from todo_api.main import create_app

TOOL_NAMES = {"add_task", "list_tasks", "complete_task", "reopen_task", "update_task", "delete_task", "task_stats"}
JSONRPC_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


class Agent:
    """Someone calling the MCP server with a bearer token, and the REST API with the same token."""

    def __init__(self, server: LiveServer, user_id: str, token: str) -> None:
        self.server = server
        self.id = user_id
        self.headers = bearer(token)

    @asynccontextmanager
    async def session(self) -> Any:
        async with (
            httpx2.AsyncClient(headers=self.headers, timeout=30) as http,
            streamable_http_client(f"{self.server.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session

    def calls(self, *calls: tuple[str, dict[str, Any]]) -> list[CallToolResult]:
        """Each tool call in turn, in one MCP session."""

        async def run() -> list[CallToolResult]:
            async with self.session() as session:
                return [await session.call_tool(name, arguments) for name, arguments in calls]

        return anyio.run(run)

    def call(self, name: str, **arguments: Any) -> CallToolResult:
        return self.calls((name, arguments))[0]

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=self.headers, timeout=30)


def result(outcome: CallToolResult) -> Any:
    assert not outcome.is_error, outcome.content
    structured = outcome.structured_content
    assert structured is not None
    return structured.get("result", structured) if set(structured) == {"result"} else structured


def error(outcome: CallToolResult) -> str:
    assert outcome.is_error
    assert outcome.structured_content is None
    [content] = outcome.content
    assert content.type == "text"
    return content.text


def register(server: LiveServer) -> Agent:
    with server.client() as http:
        email = unique_email("agent")
        response = http.post("/api/auth/register", json={"name": "Agent", "email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        body = response.json()
    return Agent(server, body["user"]["id"], body["access_token"])


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


@pytest.fixture(scope="module")
def mcp_settings(database_url: str) -> Settings:
    return make_settings(database_url, MCP_AUTHORIZATION_SERVERS="https://auth.example.com")


@pytest.fixture(scope="module")
def server(mcp_settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(mcp_settings)) as live:
        yield live


@pytest.fixture
def alice(server: LiveServer) -> Agent:
    return register(server)


@pytest.fixture
def bob(server: LiveServer) -> Agent:
    return register(server)


# --- The protocol: initialize, the tools and their schemas ---


def test_initialize_lists_every_tool_with_a_schema_a_model_can_use(alice: Agent) -> None:
    async def run() -> Any:
        async with alice.session() as session:
            return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in anyio.run(run)}

    assert set(tools) == TOOL_NAMES == set(TOOLS)
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30, tool.name
        assert "ctx" not in tool.input_schema["properties"]
        assert all(spec.get("description") for spec in tool.input_schema["properties"].values()), tool.name
    add = tools["add_task"].input_schema
    assert add["required"] == ["title"]
    assert add["properties"]["title"]["maxLength"] == 200
    assert add["properties"]["due_date"]["format"] == "date-time"
    assert add["properties"]["tags"]["maxItems"] == 20
    listing = tools["list_tasks"].input_schema["properties"]
    assert listing["status"]["enum"] == ["all", "pending", "completed"]
    assert listing["status"]["default"] == "all"
    assert (listing["limit"]["default"], listing["limit"]["maximum"]) == (50, 200)
    assert listing["sort"]["enum"] == ["created_at", "updated_at", "due_date", "priority", "title", "completed_at"]
    assert tools["complete_task"].input_schema["required"] == ["task_id"]
    assert tools["list_tasks"].annotations is not None and tools["list_tasks"].annotations.read_only_hint
    assert tools["delete_task"].annotations is not None and tools["delete_task"].annotations.destructive_hint


# --- Every tool, and the REST API sees what they do (and they see the REST API's changes) ---


def test_every_tool_works_and_the_rest_api_agrees(alice: Agent) -> None:
    due = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    due_text = due.isoformat().replace("+00:00", "Z")
    [added, listed] = alice.calls(
        (
            "add_task",
            {"title": "Buy milk", "priority": "high", "due_date": due_text, "tags": ["Shop", "home"], "category": "x"},
        ),
        ("list_tasks", {}),
    )
    task_id = result(added)["task_id"]
    assert result(added) == {"task_id": task_id, "status": "created", "title": "Buy milk"}
    assert result(listed) == [
        {
            "id": task_id,
            "title": "Buy milk",
            "completed": False,
            "priority": "high",
            "due_date": due_text,
            "tags": ["home", "Shop"],
        }
    ]
    with alice.rest() as rest:
        task = rest.get(f"/api/me/tasks/{task_id}").json()
        assert (task["title"], task["priority"], task["due_date"], task["tags"]) == (
            "Buy milk",
            "high",
            due_text,
            ["home", "Shop"],
        )
        made_by_rest = rest.post("/api/me/tasks", json={"title": "Call mum", "tags": ["phone"]}).json()

    [seen, updated, completed, reopened, deleted, stats, after] = alice.calls(
        ("list_tasks", {"tag": "PHONE"}),
        ("update_task", {"task_id": task_id, "title": "Buy oat milk", "tags": ["shop"]}),
        ("complete_task", {"task_id": made_by_rest["id"]}),
        ("reopen_task", {"task_id": made_by_rest["id"]}),
        ("delete_task", {"task_id": task_id}),
        ("task_stats", {"time_zone": "Europe/Berlin"}),
        ("list_tasks", {"status": "all"}),
    )
    assert [task["id"] for task in result(seen)] == [made_by_rest["id"]]
    assert result(updated) == {"task_id": task_id, "status": "updated", "title": "Buy oat milk"}
    assert result(completed) == {"task_id": made_by_rest["id"], "status": "completed", "title": "Call mum"}
    assert result(reopened) == {"task_id": made_by_rest["id"], "status": "pending", "title": "Call mum"}
    assert result(deleted) == {"task_id": task_id, "status": "deleted", "title": "Buy oat milk"}
    assert [task["id"] for task in result(after)] == [made_by_rest["id"]]
    with alice.rest() as rest:
        assert result(stats) == rest.get("/api/me/stats", params={"tz": "Europe/Berlin"}).json()
        trashed = rest.get("/api/me/tasks", params={"trashed": "true"}).json()
        assert [(task["id"], task["tags"], task["version"]) for task in trashed] == [(task_id, ["shop"], 3)]
        call_mum = rest.get(f"/api/me/tasks/{made_by_rest['id']}").json()
        assert (call_mum["completed"], call_mum["version"]) == (False, 3)
        assert rest.post(f"/api/me/tasks/{task_id}/restore").status_code == 200


def test_list_filters_sort_and_limit(alice: Agent) -> None:
    with alice.rest() as rest:
        for title, priority, done in [("b low", "low", False), ("a high", "high", False), ("c done", "medium", True)]:
            assert rest.post("/api/me/tasks", json={"title": title, "priority": priority, "completed": done}).is_success
    [pending, completed, by_title, high, two, searched] = alice.calls(
        ("list_tasks", {"status": "pending"}),
        ("list_tasks", {"status": "completed"}),
        ("list_tasks", {"sort": "title", "sort_order": "asc"}),
        ("list_tasks", {"priority": "high"}),
        ("list_tasks", {"limit": 2}),
        ("list_tasks", {"search": "DONE"}),
    )
    assert [task["title"] for task in result(pending)] == ["a high", "b low"]
    assert [task["title"] for task in result(completed)] == ["c done"]
    assert [task["title"] for task in result(by_title)] == ["a high", "b low", "c done"]
    assert [task["title"] for task in result(high)] == ["a high"]
    assert len(result(two)) == 2
    assert [task["title"] for task in result(searched)] == ["c done"]


def test_completing_a_recurring_task_returns_its_next_occurrence(alice: Agent) -> None:
    due = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    [added] = alice.calls(("add_task", {"title": "Standup", "due_date": due, "recurrence": "FREQ=DAILY"}))
    task_id = result(added)["task_id"]

    completed = result(alice.call("complete_task", task_id=task_id))

    next_id = completed["next_task_id"]
    assert completed == {"task_id": task_id, "status": "completed", "title": "Standup", "next_task_id": next_id}
    with alice.rest() as rest:
        follower = rest.get(f"/api/me/tasks/{next_id}").json()
    assert (follower["title"], follower["completed"], follower["series_id"]) == ("Standup", False, task_id)


# --- Tool errors: clear, and never a trace ---


def test_bad_arguments_are_tool_errors_with_the_422_field_messages(alice: Agent) -> None:
    outcomes = alice.calls(
        ("add_task", {"title": "x", "tags": [f"t{n}" for n in range(21)]}),
        ("add_task", {"title": "x", "tags": ["a" * 41]}),
        ("add_task", {"title": ""}),
        ("add_task", {"title": "x", "recurrence": "FREQ=HOURLY", "due_date": "2030-01-01T09:00:00Z"}),
        ("add_task", {"title": "x", "recurrence": "FREQ=DAILY"}),
        ("add_task", {"title": "x", "due_date": "next tuesday"}),
        ("update_task", {"task_id": 1}),
        ("task_stats", {"time_zone": "Mars/Olympus"}),
        ("list_tasks", {"limit": 201}),
    )
    messages = [error(outcome) for outcome in outcomes]
    assert messages[0] == "tags: List should have at most 20 items after validation, not 21"
    assert messages[1] == "tags.0: String should have at most 40 characters"
    assert messages[2] == "title: String should have at least 1 character"
    assert messages[3].startswith("recurrence: ") and "FREQ" in messages[3]
    assert messages[4] == "Value error, a recurring task needs a due_date"
    assert messages[5].startswith("due_date: Input should be a valid datetime")
    assert messages[6] == NOTHING_TO_UPDATE
    assert messages[7] == "time_zone: Value error, unknown time zone; use an IANA name such as Europe/Berlin or UTC"
    assert messages[8] == "limit: must be between 1 and 200"
    with alice.rest() as rest:
        assert rest.get("/api/me/tasks").json() == []


def test_wrong_argument_types_are_tool_errors_not_crashes(alice: Agent) -> None:
    outcomes = alice.calls(
        ("complete_task", {"task_id": "forty-two"}),
        ("add_task", {}),
        ("list_tasks", {"status": "someday"}),
        ("no_such_tool", {}),
    )
    for outcome in outcomes:
        message = error(outcome)
        assert "Traceback" not in message and "sqlalchemy" not in message.lower()
    assert "task_id" in error(outcomes[0])
    assert "title" in error(outcomes[1])
    assert "status" in error(outcomes[2])


# --- Isolation: one user's tools can never reach another's tasks ---


def test_another_users_tasks_are_missing_word_for_word(alice: Agent, bob: Agent) -> None:
    [added] = alice.calls(("add_task", {"title": "Alice's secret"}))
    secret_id = result(added)["task_id"]
    with alice.rest() as rest:
        gone_id = rest.post("/api/me/tasks", json={"title": "deleted"}).json()["id"]
        assert rest.delete(f"/api/me/tasks/{gone_id}", params={"permanent": "true"}).status_code == 204
        before = rest.get(f"/api/me/tasks/{secret_id}").json()

    for task_id in (secret_id, gone_id):
        outcomes = bob.calls(
            ("complete_task", {"task_id": task_id}),
            ("reopen_task", {"task_id": task_id}),
            ("update_task", {"task_id": task_id, "title": "pwned"}),
            ("delete_task", {"task_id": task_id}),
            # Bob naming Alice as the user changes nothing: the user is the token's.
            ("complete_task", {"task_id": task_id, "user_id": alice.id}),
        )
        assert [error(outcome) for outcome in outcomes] == [f"Task {task_id} not found"] * 5
    # Alice herself, naming Bob: as missing as a task that is not there.
    assert error(alice.call("complete_task", task_id=secret_id, user_id=bob.id)) == f"Task {secret_id} not found"

    # Listing, adding and counting for someone else: the same answer as the REST API's other-user path.
    for name, arguments in [("list_tasks", {}), ("add_task", {"title": "x"}), ("task_stats", {})]:
        for other in (alice.id, "someone-who-does-not-exist"):
            assert error(bob.call(name, user_id=other, **arguments)) == "Task not found"
    assert result(bob.call("list_tasks", user_id="me")) == []
    assert result(bob.call("list_tasks", user_id=bob.id)) == []
    assert result(bob.call("task_stats"))["total"] == 0

    with alice.rest() as rest:
        assert rest.get(f"/api/me/tasks/{secret_id}").json() == before
        assert [task["id"] for task in rest.get("/api/me/tasks").json()] == [secret_id]


# --- HTTP: who may call, from where, how much ---


def post(server: LiveServer, body: Any, **headers: str) -> httpx.Response:
    with server.client() as http:
        return http.post("/mcp", content=json.dumps(body), headers={**JSONRPC_HEADERS, **headers})


def test_without_a_valid_token_the_answer_is_401_naming_the_metadata(server: LiveServer, alice: Agent) -> None:
    challenge = f'Bearer resource_metadata="{server.url}/.well-known/oauth-protected-resource"'
    expired = better_auth_token(alice.id, expires_in=-3600)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, bearer(expired), {"Authorization": "Basic eDp5"}):
        response = post(server, rpc("tools/list"), **headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == challenge
        assert response.json()["detail"] in {"Not authenticated", "Could not validate credentials"}

    with server.client() as http:
        document = http.get("/.well-known/oauth-protected-resource")
        assert document.status_code == 200
        assert document.json() == {
            "resource": f"{server.url}/mcp",
            "authorization_servers": ["https://auth.example.com"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Todo API",
            "resource_documentation": f"{server.url}/docs",
        }
        assert http.get("/.well-known/oauth-protected-resource/mcp").json() == document.json()


def test_a_logged_out_token_is_refused_at_once(server: LiveServer, alice: Agent) -> None:
    assert result(alice.call("list_tasks")) == []
    with alice.rest() as rest:
        assert rest.post("/api/auth/logout").status_code == 204

    response = post(server, rpc("tools/call", {"name": "list_tasks", "arguments": {}}), **alice.headers)

    assert response.status_code == 401
    assert response.json() == {"detail": "Could not validate credentials"}


def test_a_browser_origin_must_be_one_of_ours(server: LiveServer, alice: Agent) -> None:
    evil = post(server, rpc("tools/list"), Origin="https://evil.example", **alice.headers)
    assert evil.status_code == 403
    assert evil.json() == {"detail": "Origin not allowed"}
    # Checked before the token: a page elsewhere learns nothing, not even whether a token works.
    assert post(server, rpc("tools/list"), Origin="https://evil.example").status_code == 403

    ours = post(server, rpc("tools/list"), Origin="http://localhost:3000", **alice.headers)
    assert ours.status_code == 200, ours.text
    assert {tool["name"] for tool in ours.json()["result"]["tools"]} == TOOL_NAMES


def test_transport_errors_are_clear_4xx(server: LiveServer, alice: Agent) -> None:
    big = rpc("tools/call", {"name": "add_task", "arguments": {"title": "x", "description": "y" * 2_000_000}})
    too_large = post(server, big, **alice.headers)
    assert too_large.status_code == 413
    assert too_large.json() == {"detail": "Request body too large"}

    with server.client() as http:
        not_json = http.post("/mcp", content=b"{", headers={**JSONRPC_HEADERS, **alice.headers})
        assert not_json.status_code == 400
        assert not_json.json()["error"]["code"] == -32700
        assert http.get("/mcp", headers=alice.headers).status_code == 405
        assert http.delete("/mcp", headers=alice.headers).status_code == 405


def test_calls_are_stateless_any_instance_answers(mcp_settings: Settings, alice: Agent) -> None:
    with LiveServer(create_app(mcp_settings)) as second:
        instances = [alice.server, second]
        initialize = rpc(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        )
        assert post(instances[0], initialize, **alice.headers).status_code == 200
        added = post(
            instances[1], rpc("tools/call", {"name": "add_task", "arguments": {"title": "A"}}), **alice.headers
        )
        assert added.status_code == 200, added.text
        assert "mcp-session-id" not in added.headers
        task_id = added.json()["result"]["structuredContent"]["task_id"]
        for turn in range(4):
            name = "complete_task" if turn % 2 == 0 else "reopen_task"
            call = rpc("tools/call", {"name": name, "arguments": {"task_id": task_id}}, request_id=turn + 2)
            answer = post(instances[turn % 2], call, **alice.headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["structuredContent"]["status"] == (
                "completed" if turn % 2 == 0 else "pending"
            )


def test_rate_limited_per_user(database_url: str, alice: Agent) -> None:
    settings = make_settings(database_url, RATE_LIMIT_ENABLED=True, RATE_LIMIT_MCP="3/minute")
    with LiveServer(create_app(settings)) as limited:
        answers = [post(limited, rpc("tools/list"), **alice.headers) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["retry-after"]) > 0
        assert answers[-1].json()["detail"].startswith("Too many requests")


def test_disabled_there_is_no_mcp_route(database_url: str) -> None:
    with LiveServer(create_app(make_settings(database_url, MCP_ENABLED=False))) as plain, plain.client() as http:
        assert http.post("/mcp", json=rpc("tools/list")).status_code == 404
        assert http.get("/.well-known/oauth-protected-resource").status_code == 404


def test_calls_are_labelled_by_tool_in_metrics(database_url: str, alice: Agent) -> None:
    with LiveServer(create_app(make_settings(database_url, METRICS_ENABLED=True))) as observed:
        agent = Agent(observed, alice.id, alice.headers["Authorization"].removeprefix("Bearer "))
        assert result(agent.call("list_tasks")) == []
        post(observed, rpc("tools/call", {"name": "../../etc", "arguments": {}}), **alice.headers)
        with observed.client() as http:
            metrics = http.get("/metrics").text
    assert 'route="/mcp tools/call list_tasks",status="200"' in metrics
    assert 'route="/mcp initialize"' in metrics
    assert 'route="/mcp tools/call <unknown>"' in metrics
    assert "etc" not in metrics


def test_a_better_auth_jwks_token_works_and_is_isolated(database_url: str, alice: Agent) -> None:
    key = new_key("EdDSA")
    jwks = JWKSServer([key])
    try:
        settings = make_settings(database_url, BETTER_AUTH_URL=jwks.url)
        with LiveServer(create_app(settings)) as frontend_backed:
            user = FrontendUser(name="Grace")
            token = sign(plugin_payload(user, iss=jwks.url, aud=jwks.url), key)
            grace = Agent(frontend_backed, user.id, token)
            [added, listed] = grace.calls(("add_task", {"title": "From the chat"}), ("list_tasks", {}))
            assert [task["title"] for task in result(listed)] == ["From the chat"]
            with grace.rest() as rest:
                [task] = rest.get(f"/api/{user.id}/tasks").json()
            assert (task["id"], task["user_id"]) == (result(added)["task_id"], user.id)
            # The same tools, another user's token: nothing of Grace's.
            other = Agent(frontend_backed, alice.id, alice.headers["Authorization"].removeprefix("Bearer "))
            task_id = result(added)["task_id"]
            assert error(other.call("complete_task", task_id=task_id)) == f"Task {task_id} not found"
            # A token the JWKS did not sign: 401 at the HTTP level.
            forged = sign(plugin_payload(user, iss=jwks.url, aud=jwks.url), new_key("EdDSA"))
            assert post(frontend_backed, rpc("tools/list"), **bearer(forged)).status_code == 401
    finally:
        jwks.stop()


def test_a_database_outage_inside_a_tool_is_a_retry_message_not_a_crash() -> None:
    # The tool's own block meeting a dead database (the HTTP side answers 503 before a tool runs when it is down
    # already; this is the database failing in between): the error mapping, on the real exception types.
    @answers
    def tool(task_id: int) -> dict[str, Any]:  # noqa: ARG001 (a tool's parameter)
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    @answers
    def buggy(task_id: int) -> dict[str, Any]:  # noqa: ARG001
        raise ProgrammingError("SELECT nonsense", {}, Exception("syntax error"))

    assert error(tool(task_id=1)) == "Service temporarily unavailable, please retry"
    with pytest.raises(ProgrammingError):  # a bug stays a bug (the SDK answers "Error executing tool")
        buggy(task_id=1)
