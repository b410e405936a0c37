"""task events: an outbox written by triggers on `tasks`, per-user sequence numbers, and stream tickets

Revision ID: 0008_task_events
Revises: 0007_tags_recurrence_checklists
Create Date: 2026-12-05

`task_events` holds one row per change of a task, written by triggers on `tasks` in the transaction of the change: an
event exists exactly when its change committed, whichever statement made it (a route, a bulk action, a tag rename,
the next occurrence of a recurring task, the trash purge). `seq` numbers a user's events 1, 2, 3, ... from
`event_counters`, whose row for the user the trigger bumps: a second writer of the same user waits for that row lock
until the first commits, so the numbers become visible in order and a reader that saw N never misses a later N - 1.
`data` is the event's JSON: `{"task": <the task as the API renders it>}` (rendered here as `responses.task_json`
renders a row; a test holds the two to the same bytes) or `{"task_id": N}` for a deleted task. The type: created;
for an UPDATE trashed, restored, completed, reopened (in that order of precedence) or updated; deleted. A task deleted
with its user (the account is deleted) leaves no event.

PostgreSQL: statement-level triggers with transition tables (one counter bump per user and statement: a bulk action
of 500 tasks locks the counter once, after all its task rows, so two writers cannot deadlock on it). SQLite (one
writer at a time): row-level triggers.

`stream_tickets` holds single-use tickets for `EventSource` (`POST /api/auth/stream-ticket`), as SHA-256 hashes, with
what the stream needs to keep checking the token they stand for.
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_task_events"
down_revision: str | None = "0007_tags_recurrence_checklists"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The task's public fields at this revision, in TaskPublic's order, and how each is rendered: (name, kind, nullable).
FIELDS = [
    ("id", "int", False),
    ("user_id", "str", False),
    ("title", "str", False),
    ("description", "str", True),
    ("completed", "bool", False),
    ("priority", "str", False),
    ("category", "str", True),
    ("due_date", "time", True),
    ("completed_at", "time", True),
    ("created_at", "time", False),
    ("updated_at", "time", False),
    ("version", "int", False),
    ("trashed_at", "time", True),
    ("tags", "json", False),
    ("checklist", "json", False),
    ("recurrence", "str", True),
    ("recurrence_basis", "str", False),
    ("time_zone", "str", False),
    ("series_id", "series", True),
    ("next_task_id", "int", True),
]


def _pg_time(column: str) -> str:
    """A timestamptz, in UTC, with microseconds only when there are any (as pydantic writes it)."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    fraction = f"to_char({utc}, 'US')"
    return (
        f"'\"' || to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        f"|| CASE WHEN {fraction} = '000000' THEN '' ELSE '.' || {fraction} END || 'Z\"'"
    )


def _sqlite_time(column: str) -> str:
    """Stored as 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC."""
    fraction = f"substr({column} || '000000', 21, 6)"
    return (
        f"'\"' || substr({column}, 1, 10) || 'T' || substr({column}, 12, 8) "
        f"|| CASE WHEN length({column}) <= 20 OR {fraction} = '000000' THEN '' ELSE '.' || {fraction} END || 'Z\"'"
    )


# How each kind of value becomes JSON text, per dialect (`bool` is the same on both).
_RENDER: dict[str, dict[str, Callable[[str], str]]] = {
    "postgresql": {
        "int": "({})::text".format,
        "str": "to_json({})::text".format,
        "json": "{}::text".format,
        "time": _pg_time,
    },
    "sqlite": {
        "int": "CAST({} AS TEXT)".format,
        "str": "json_quote({})".format,  # json_quote(NULL) is 'null' already
        "json": "{}".format,
        "time": _sqlite_time,
    },
}


def _value(dialect: str, row: str, name: str, kind: str, nullable: bool) -> str:
    column = f"{row}.{name}"
    if kind == "series":  # a series' first task has its series_id stored NULL and read as its id
        column = (
            f"CASE WHEN {row}.series_id IS NULL AND {row}.recurrence IS NOT NULL THEN {row}.id ELSE {row}.series_id END"
        )
        kind = "int"
    if kind == "bool":
        text = f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    else:
        text = _RENDER[dialect][kind](column)
    if dialect == "sqlite" and kind == "str":
        return text
    return f"COALESCE({text}, 'null')" if nullable else text


def _rendered(dialect: str, row: str, fields: Sequence[tuple[str, str, bool]] = FIELDS) -> str:
    """The event's JSON for the task in `row`, with the task's public `fields` (a later revision passes its own)."""
    pieces = []
    for position, (name, kind, nullable) in enumerate(fields):
        key = ("{" if position == 0 else ",") + f'"{name}":'
        pieces.append(f"'{key}' || {_value(dialect, row, name, kind, nullable)}")
    status = f'CASE WHEN {row}.completed THEN \',"status":"completed"}}\' ELSE \',"status":"pending"}}\' END'
    return "'{\"task\":' || " + " || ".join(pieces) + f" || {status} || '}}'"


def _update_type(new: str, old: str) -> str:
    return (
        f"CASE WHEN {new}.trashed_at IS NOT NULL AND {old}.trashed_at IS NULL THEN 'task.trashed' "
        f"WHEN {new}.trashed_at IS NULL AND {old}.trashed_at IS NOT NULL THEN 'task.restored' "
        f"WHEN {new}.completed AND NOT {old}.completed THEN 'task.completed' "
        f"WHEN {old}.completed AND NOT {new}.completed THEN 'task.reopened' "
        "ELSE 'task.updated' END"
    )


_PG_EMIT = """
WITH changed AS ({changes}),
counts AS (SELECT user_id, count(*) AS n FROM changed GROUP BY user_id ORDER BY user_id),
bumped AS (
    INSERT INTO event_counters AS counter (user_id, seq) SELECT user_id, n FROM counts
    ON CONFLICT (user_id) DO UPDATE SET seq = counter.seq + EXCLUDED.seq
    RETURNING counter.user_id, counter.seq
)
INSERT INTO task_events (user_id, seq, type, task_id, data, created_at)
SELECT changed.user_id,
       bumped.seq - counts.n + row_number() OVER (PARTITION BY changed.user_id ORDER BY changed.task_id),
       changed.type, changed.task_id, changed.data, now()
FROM changed JOIN counts USING (user_id) JOIN bumped USING (user_id)
"""


def _pg_changes(fields: Sequence[tuple[str, str, bool]]) -> dict[str, str]:
    rendered = _rendered("postgresql", "r", fields)
    return {
        "insert": f"SELECT r.user_id, r.id AS task_id, 'task.created' AS type, {rendered} AS data FROM new_rows r",
        "update": f"SELECT r.user_id, r.id AS task_id, {_update_type('r', 'o')} AS type, "
        f"{rendered} AS data FROM new_rows r JOIN old_rows o ON o.id = r.id",
        "delete": "SELECT o.user_id, o.id AS task_id, 'task.deleted' AS type, '{\"task_id\":' || o.id || '}' AS data "
        "FROM old_rows o WHERE EXISTS (SELECT 1 FROM users WHERE users.id = o.user_id)",
    }


_TRANSITIONS = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
}

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
_SQLITE_TRIGGER = """
CREATE TRIGGER task_events_{event} AFTER {EVENT} ON tasks
FOR EACH ROW WHEN EXISTS (SELECT 1 FROM users WHERE users.id = {row}.user_id)
BEGIN
    INSERT INTO event_counters (user_id, seq) VALUES ({row}.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
    INSERT INTO task_events (user_id, seq, type, task_id, data, created_at)
    SELECT {row}.user_id, seq, {type}, {row}.id, {data}, {now} FROM event_counters WHERE user_id = {row}.user_id;
END
"""


def _sqlite_events(fields: Sequence[tuple[str, str, bool]]) -> dict[str, tuple[str, str, str]]:
    return {
        "insert": ("NEW", "'task.created'", _rendered("sqlite", "NEW", fields)),
        "update": ("NEW", _update_type("NEW", "OLD"), _rendered("sqlite", "NEW", fields)),
        "delete": ("OLD", "'task.deleted'", "'{\"task_id\":' || OLD.id || '}'"),
    }


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_table(
        "event_counters",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_event_counters"),
    )
    op.create_table(
        "task_events",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "seq", name="pk_task_events"),
    )
    op.create_index("ix_task_events_created_at", "task_events", ["created_at"])
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_stream_tickets_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ticket_hash", name="pk_stream_tickets"),
    )
    create_triggers(FIELDS)


def create_triggers(fields: Sequence[tuple[str, str, bool]]) -> None:
    """The event triggers on `tasks`, rendering the task's public `fields` (also used by later revisions)."""
    if _is_postgresql():
        for event, changes in _pg_changes(fields).items():
            op.execute(
                f"CREATE FUNCTION task_events_{event}() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN "
                + _PG_EMIT.format(changes=changes)
                + "; RETURN NULL; END $body$"
            )
            op.execute(
                f"CREATE TRIGGER task_events_{event} AFTER {event.upper()} ON tasks {_TRANSITIONS[event]} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION task_events_{event}()"
            )
    else:
        for event, (row, type_, data) in _sqlite_events(fields).items():
            op.execute(
                _SQLITE_TRIGGER.format(
                    event=event, EVENT=event.upper(), row=row, type=type_, data=data, now=_SQLITE_NOW
                )
            )


def drop_triggers() -> None:
    postgresql = _is_postgresql()
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER task_events_{event} ON tasks" if postgresql else f"DROP TRIGGER task_events_{event}")
        if postgresql:
            op.execute(f"DROP FUNCTION task_events_{event}()")


def downgrade() -> None:
    drop_triggers()
    op.drop_table("stream_tickets")
    op.drop_index("ix_task_events_created_at", table_name="task_events")
    op.drop_table("task_events")
    op.drop_table("event_counters")
