"""Every JSON answer of the task routes: `json_response`, and a task's, rendered once from its row (`task_response`).

Routes serialize here, in their own thread-pool hop: returned as objects, FastAPI would validate them again against
`response_model` (which stays, for the OpenAPI document) in another hop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import Response, status
from pydantic_core import to_json
from sqlalchemy import Row

from todo_api.headers import etag
from todo_api.tasks.models import TaskPublic, task_status

_PUBLIC_FIELDS = tuple(TaskPublic.model_fields)
_TAGS, _CHECKLIST, _REMINDERS = (_PUBLIC_FIELDS.index(name) for name in ("tags", "checklist", "reminders"))
_LISTED_FIELDS = _PUBLIC_FIELDS[:_TAGS]
_NULL_TAGS = '"tags":null'


def json_response(
    content: Any, *, status_code: int = status.HTTP_200_OK, headers: Mapping[str, str] | None = None
) -> Response:
    """`content` as JSON (bytes already rendered are sent as they are)."""
    body = content if isinstance(content, bytes) else to_json(content)
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def _splice(rendered: bytes, fragments: Iterable[str]) -> bytes:
    """`rendered` (tasks rendered with `"tags": null` and nothing after it but `status`) with each task's fragment,
    the JSON text of its fields from `tags` on, in that place. Every occurrence of `"tags":null` is one task's field,
    in order: its quotes cannot occur unescaped inside a string. (Joined as text: a page encodes once.)"""
    parts = rendered.decode().split(_NULL_TAGS)
    spliced = [parts[0]]
    for fragment, part in zip(fragments, parts[1:], strict=True):
        spliced += (fragment, part)
    return "".join(spliced).encode()


def _task(row: Row[Any]) -> dict[str, Any]:
    task = dict(zip(_PUBLIC_FIELDS, row, strict=False))  # a row may carry more columns after these (the series')
    task["tags"] = None
    del task["checklist"], task["reminders"]  # these come from the row's JSON text (`task_json`)
    task["status"] = task_status(task["completed"])
    if task["series_id"] is None and task["recurrence"] is not None:
        task["series_id"] = task["id"]  # a series' first task (tasks.queries: stored NULL until its rule ends)
    return task


def task_json(row: Row[Any]) -> bytes:
    """A row of `tasks.queries.PUBLIC_COLUMNS` as TaskPublic's JSON. The row was just read from our own table, so it
    is not validated again (for a page of 100 that costs four times the query); its tags, checklist and reminders,
    read as the database's JSON text, go in as they are (parsed, they cost more than the rest of the row). A test
    holds this to TaskPublic's own serialization."""
    fragment = f'"tags":{row[_TAGS]},"checklist":{row[_CHECKLIST]},"reminders":{row[_REMINDERS]}'
    return _splice(to_json(_task(row)), [fragment])


def _listed(row: Row[Any]) -> dict[str, Any]:
    task = dict(zip(_LISTED_FIELDS, row, strict=False))  # the last column, `rest`, is spliced in
    task["tags"] = None
    task["status"] = task_status(task["completed"])
    return task


def tasks_json(rows: Sequence[Row[Any]]) -> bytes:
    """A list page (rows of `tasks.queries.LISTED_COLUMNS`) as a JSON array of tasks, rendered as `task_json`
    renders one: each task's leading fields rendered here, the rest (`rest`: from `tags` on) as the database wrote
    it."""
    return _splice(to_json([_listed(row) for row in rows]), [row[-1] for row in rows])


def task_objects(rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """A list of tasks as TaskPublic's JSON objects (for those who pick from them: the MCP tools)."""
    tasks: list[dict[str, Any]] = json.loads(tasks_json(rows))
    return tasks


def task_headers(version: int) -> dict[str, str]:
    return {"ETag": etag(version)}


def task_response(row: Row[Any], *, status_code: int = status.HTTP_200_OK) -> Response:
    """One task, with its ETag: every 200 and 201 of a task (the 412 body is `task_json` too)."""
    return json_response(task_json(row), status_code=status_code, headers=task_headers(row.version))
