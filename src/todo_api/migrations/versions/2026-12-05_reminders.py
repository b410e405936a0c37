"""reminders: a task's reminders, their schedule, the in-app feed, Web Push subscriptions and the delivery queue

Revision ID: 0009_reminders
Revises: 0008_task_events
Create Date: 2026-12-05

`tasks.reminders` is what a task returns: `[{"id", "at" | "before_due", "fire_at", "fired_at"}, ...]`, written by the
application (which computes `fire_at`). `reminder_jobs` holds one row per reminder that is armed: its task live and
not completed, not fired, and its `fire_at` in the future when it was armed. Triggers on `tasks` keep it from
`tasks.reminders` (as 0007 keeps `task_tags` from `tasks.tags`): a completed or trashed task's rows go (its reminders
are cancelled), a reopened or restored task's come back for the reminders still in the future, a reminder whose
`fire_at` moved is armed again if the new one is in the future. Never written by the application except by the
scheduler, which deletes a row when it fires it (by setting the reminder's `fired_at`, in the same transaction).

`notifications` is the in-app feed (one row per fired reminder; unique per task, reminder and `fire_at`, so one
firing can never be recorded twice), and a trigger on it writes the `reminder` event to `task_events`.
`deliveries` is the queue of sends still to make (email, or one per push subscription): a row is claimed with a
lease, sent, then deleted or given its next attempt.

The event triggers on `tasks` (0008) are made again with the new field, `reminders`, after `checklist`.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0009_reminders"
down_revision: str | None = "0008_task_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _events_revision() -> ModuleType:
    """Revision 0008, whose event triggers (and their renderer) this one makes again with one more field."""
    path = Path(__file__).with_name("2026-12-05_task_events.py")
    spec = importlib.util.spec_from_file_location("todo_api_revision_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields(events: ModuleType) -> list[tuple[str, str, bool]]:
    fields: list[tuple[str, str, bool]] = list(events.FIELDS)
    at = [name for name, _, _ in fields].index("checklist") + 1
    return [*fields[:at], ("reminders", "json", False), *fields[at:]]


# The notification as the feed renders it (`reminders.models.NotificationPublic`), for its `reminder` event.
NOTIFICATION_FIELDS = [
    ("id", "int", False),
    ("type", "str", False),
    ("task_id", "int", False),
    ("reminder_id", "int", False),
    ("title", "str", False),
    ("due_date", "time", True),
    ("fire_at", "time", False),
    ("created_at", "time", False),
    ("read_at", "time", True),
]

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)

# The reminders a task's row arms: live, not completed, not fired.
_PG_ARMED = (
    "FROM jsonb_array_elements(NEW.reminders) AS r(item) "
    "WHERE NOT NEW.completed AND NEW.trashed_at IS NULL AND r.item->'fired_at' = 'null'::jsonb"
)
PG_JOBS_FUNCTION = f"""
CREATE FUNCTION reminder_jobs_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM reminder_jobs AS job WHERE job.task_id = NEW.id AND NOT EXISTS (
        SELECT 1 {_PG_ARMED}
        AND (r.item->>'id')::integer = job.reminder_id AND (r.item->>'fire_at')::timestamptz = job.fire_at
    );
    INSERT INTO reminder_jobs (task_id, reminder_id, user_id, fire_at)
    SELECT NEW.id, (r.item->>'id')::integer, NEW.user_id, (r.item->>'fire_at')::timestamptz {_PG_ARMED}
    AND (r.item->>'fire_at')::timestamptz > now()
    ON CONFLICT (task_id, reminder_id) DO NOTHING;
    RETURN NULL;
END
$$
"""
PG_JOBS_TRIGGERS = (
    "CREATE TRIGGER reminder_jobs_insert AFTER INSERT ON tasks FOR EACH ROW "
    "WHEN (NEW.reminders <> '[]'::jsonb) EXECUTE FUNCTION reminder_jobs_sync()",
    "CREATE TRIGGER reminder_jobs_update AFTER UPDATE OF reminders, completed, trashed_at ON tasks FOR EACH ROW "
    "WHEN (NEW.reminders <> '[]'::jsonb OR OLD.reminders <> '[]'::jsonb) EXECUTE FUNCTION reminder_jobs_sync()",
)

# SQLite stores a timestamp as 'YYYY-MM-DD HH:MM:SS.ffffff'; the JSON has 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z'.
_SQLITE_FIRE_AT = (
    "(substr(json_extract(r.value, '$.fire_at'), 1, 10) || ' ' || substr(json_extract(r.value, '$.fire_at'), 12, 8) "
    "|| '.' || substr(CASE WHEN length(json_extract(r.value, '$.fire_at')) > 20 "
    "THEN substr(json_extract(r.value, '$.fire_at'), 21, 6) ELSE '' END || '000000', 1, 6))"
)
_SQLITE_ARMED = (
    "FROM json_each(NEW.reminders) AS r "
    "WHERE NOT NEW.completed AND NEW.trashed_at IS NULL AND json_type(r.value, '$.fired_at') = 'null'"
)
_SQLITE_INSERT_JOBS = f"""
    INSERT INTO reminder_jobs (task_id, reminder_id, user_id, fire_at)
    SELECT NEW.id, json_extract(r.value, '$.id'), NEW.user_id, {_SQLITE_FIRE_AT} {_SQLITE_ARMED}
    AND {_SQLITE_FIRE_AT} > strftime('%Y-%m-%d %H:%M:%f000', 'now')
    ON CONFLICT (task_id, reminder_id) DO NOTHING;
"""
SQLITE_JOBS_TRIGGERS = (
    f"""CREATE TRIGGER reminder_jobs_insert AFTER INSERT ON tasks FOR EACH ROW WHEN NEW.reminders <> '[]'
BEGIN {_SQLITE_INSERT_JOBS} END""",
    f"""CREATE TRIGGER reminder_jobs_update AFTER UPDATE OF reminders, completed, trashed_at ON tasks FOR EACH ROW
WHEN NEW.reminders <> '[]' OR OLD.reminders <> '[]'
BEGIN
    DELETE FROM reminder_jobs WHERE task_id = NEW.id AND NOT EXISTS (
        SELECT 1 {_SQLITE_ARMED}
        AND json_extract(r.value, '$.id') = reminder_jobs.reminder_id AND {_SQLITE_FIRE_AT} = reminder_jobs.fire_at
    );
    {_SQLITE_INSERT_JOBS}
END""",
)
JOBS_TRIGGERS = ("reminder_jobs_insert", "reminder_jobs_update")


def _notification_json(events: ModuleType, dialect: str, row: str) -> str:
    pieces = []
    for position, (name, kind, nullable) in enumerate(NOTIFICATION_FIELDS):
        key = ("{" if position == 0 else ",") + f'"{name}":'
        pieces.append(f"'{key}' || {events._value(dialect, row, name, kind, nullable)}")
    return "'{\"notification\":' || " + " || ".join(pieces) + " || '}}'"


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _create_notification_events(events: ModuleType) -> None:
    if _is_postgresql():
        changes = (
            "SELECT r.user_id, r.task_id, 'reminder' AS type, "
            f"{_notification_json(events, 'postgresql', 'r')} AS data FROM new_rows r"
        )
        op.execute(
            "CREATE FUNCTION notification_events() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN "
            + events._PG_EMIT.format(changes=changes)
            + "; RETURN NULL; END $body$"
        )
        op.execute(
            "CREATE TRIGGER notification_events AFTER INSERT ON notifications REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION notification_events()"
        )
    else:
        op.execute(
            f"""CREATE TRIGGER notification_events AFTER INSERT ON notifications FOR EACH ROW
BEGIN
    INSERT INTO event_counters (user_id, seq) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET seq = seq + 1;
    INSERT INTO task_events (user_id, seq, type, task_id, data, created_at)
    SELECT NEW.user_id, seq, 'reminder', NEW.task_id, {_notification_json(events, "sqlite", "NEW")},
        {events._SQLITE_NOW}
    FROM event_counters WHERE user_id = NEW.user_id;
END"""
        )


def upgrade() -> None:
    events = _events_revision()
    postgresql = _is_postgresql()
    json_type = "JSONB" if postgresql else "JSON"
    op.execute(f"ALTER TABLE tasks ADD COLUMN reminders {json_type} DEFAULT '[]' NOT NULL")
    op.execute(f'ALTER TABLE users ADD COLUMN notification_channels {json_type} DEFAULT \'["email", "push"]\' NOT NULL')

    op.create_table(
        "reminder_jobs",
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("reminder_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("fire_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_reminder_jobs_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "reminder_id", name="pk_reminder_jobs"),
    )
    op.create_index("ix_reminder_jobs_fire_at", "reminder_jobs", ["fire_at"])
    op.create_table(
        "notifications",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("reminder_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("due_date", _TIME, nullable=True),
        sa.Column("fire_at", _TIME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("read_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_notifications_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("task_id", "reminder_id", "fire_at", name="uq_notifications_task_id_reminder_id_fire_at"),
    )
    op.create_index("ix_notifications_user_id_id", "notifications", ["user_id", "id"])
    op.create_index(
        "ix_notifications_unread_user_id_id",
        "notifications",
        ["user_id", "id"],
        postgresql_where=sa.text("read_at IS NULL"),
        sqlite_where=sa.text("read_at IS NULL"),
    )
    op.create_table(
        "push_subscriptions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=128), nullable=False),
        sa.Column("auth", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_push_subscriptions_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_push_subscriptions"),
        sa.UniqueConstraint("user_id", "endpoint", name="uq_push_subscriptions_user_id_endpoint"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("notification_id", _ID, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("subscription_id", _ID, nullable=True),
        sa.Column("fire_at", _TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("claimed_until", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="fk_deliveries_notification_id_notifications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["push_subscriptions.id"],
            name="fk_deliveries_subscription_id_push_subscriptions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
    )
    op.create_index("ix_deliveries_next_attempt_at", "deliveries", ["next_attempt_at"])
    op.create_index("ix_deliveries_notification_id", "deliveries", ["notification_id"])
    op.create_index("ix_deliveries_subscription_id", "deliveries", ["subscription_id"])

    if postgresql:
        op.execute(PG_JOBS_FUNCTION)
        for trigger in PG_JOBS_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in SQLITE_JOBS_TRIGGERS:
            op.execute(trigger)
    events.drop_triggers()
    events.create_triggers(_fields(events))
    _create_notification_events(events)


def downgrade() -> None:
    events = _events_revision()
    postgresql = _is_postgresql()
    op.execute(
        "DROP TRIGGER notification_events ON notifications" if postgresql else "DROP TRIGGER notification_events"
    )
    for trigger in JOBS_TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger} ON tasks" if postgresql else f"DROP TRIGGER {trigger}")
    if postgresql:
        op.execute("DROP FUNCTION notification_events()")
        op.execute("DROP FUNCTION reminder_jobs_sync()")
    events.drop_triggers()
    for index, table in (
        ("ix_deliveries_subscription_id", "deliveries"),
        ("ix_deliveries_notification_id", "deliveries"),
        ("ix_deliveries_next_attempt_at", "deliveries"),
        ("ix_notifications_unread_user_id_id", "notifications"),
        ("ix_notifications_user_id_id", "notifications"),
        ("ix_reminder_jobs_fire_at", "reminder_jobs"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("deliveries", "push_subscriptions", "notifications", "reminder_jobs"):
        op.drop_table(table)
    op.execute("ALTER TABLE users DROP COLUMN notification_channels")
    op.execute("ALTER TABLE tasks DROP COLUMN reminders")
    events.create_triggers(events.FIELDS)
