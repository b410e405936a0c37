"""tags, checklists and recurring tasks: new task columns and `task_tags`, an index of the tags kept by triggers

Revision ID: 0007_tags_recurrence_checklists
Revises: 0006_search_lower_columns
Create Date: 2026-12-05

`tasks` gains:
- `tags` and `checklist`: JSON arrays (jsonb on PostgreSQL), never NULL, '[]' by default;
- `recurrence` (an RFC 5545 RRULE value, NULL for a one-off task), `recurrence_basis` ('due' or 'completion'),
  `time_zone` (IANA, 'UTC' by default), `series_id` (the id of the series' first task), `series_start` (the series'
  first due date, the rule's anchor), `occurrence` (the position in the series, 1 by default) and `next_task_id`;
  the two ids have no foreign key (the tasks they name may be deleted later);
- two CHECK constraints: `ck_tasks_recurrence_basis` and `ck_tasks_recurrence_needs_due_date` (a recurring task has
  a due date).
Existing tasks get no tags, an empty checklist and no recurrence.

`task_tags` holds one row per (task, tag), its name as stored and lower-cased, so that "tasks with this tag" and the
tag list read an index instead of every task's JSON. It is derived from `tasks.tags` by triggers on `tasks` (as
`task_counts` is) and never written by the application: after an INSERT, one row per element of the new array;
after an UPDATE that changes `tags`, the task's rows are replaced; a deleted task's rows go by the ON DELETE CASCADE
(SQLite runs with foreign keys on). An array that repeats a name in another case cannot make a write fail: the first
spelling is kept (ON CONFLICT DO NOTHING), and JSON nulls in it are skipped. Existing tasks have no tags, so the
table starts empty. `user_id` is copied from the task when its tags are written (a task never changes owner).

`task_tags.live` is the task's `trashed_at IS NULL`: set when the rows are written, and rewritten by a third trigger
after an UPDATE OF trashed_at that trashes or restores a task with tags. So a live tag filter, its count (X-Total-Count)
and the tag list read `task_tags` alone (the counts from the partial index `ix_task_tags_live_user_id_name_lower`
alone); they no longer join every live task to learn which tasks are live. The index over all rows stays for the
tag's tasks in both states (renaming or deleting a tag takes its trashed tasks too).
`ix_tasks_live_untagged_user_id_created_at` serves `untagged` (`tags = '[]'`: written so, it means the same jsonb on
PostgreSQL and the same text on SQLite, where an empty array is always stored as '[]') and its count.

lower(): PostgreSQL folds every letter, SQLite only ASCII ones (as for `search`): on SQLite `name_lower` of `Ärger`
is `Ärger`, and only a query lower-casing the same way finds it.

SQLite cannot add a constraint to an existing table, and Alembic's batch mode would rebuild `tasks` (copy, drop,
rename): dropping the old table drops the `task_counts` triggers with it, and the copy loses AUTOINCREMENT and the
expression-based indexes, which SQLite's reflection cannot read back. So `tasks` is not rebuilt: SQLite takes a
CHECK constraint as part of a column in ALTER TABLE ADD COLUMN (and checks it against the existing rows, SQLite >=
3.37), so each CHECK is declared on the column it is about (`recurrence`, `recurrence_basis`) there, and goes with it
when the downgrade drops that column; on PostgreSQL they are table constraints. Triggers, indexes and the generated
`title_lower`/`description_lower` stay as they are. The JSON functions need SQLite >= 3.38 (or JSON1 built in);
dropping the columns again needs >= 3.35.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007_tags_recurrence_checklists"
down_revision: str | None = "0006_search_lower_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "ck_tasks_recurrence_basis": "recurrence_basis IN ('due', 'completion')",
    "ck_tasks_recurrence_needs_due_date": "recurrence IS NULL OR due_date IS NOT NULL",
}


def _inline_check(name: str) -> str:
    return f" CONSTRAINT {name} CHECK ({CHECKS[name]})"


# The new columns of tasks, in order: (name, PostgreSQL definition, SQLite definition). On SQLite a constraint can
# only come with its column (see above).
COLUMNS = [
    ("tags", "JSONB DEFAULT '[]' NOT NULL", "JSON DEFAULT '[]' NOT NULL"),
    ("checklist", "JSONB DEFAULT '[]' NOT NULL", "JSON DEFAULT '[]' NOT NULL"),
    ("recurrence", "VARCHAR(500)", "VARCHAR(500)" + _inline_check("ck_tasks_recurrence_needs_due_date")),
    (
        "recurrence_basis",
        "VARCHAR(10) DEFAULT 'due' NOT NULL",
        "VARCHAR(10) DEFAULT 'due' NOT NULL" + _inline_check("ck_tasks_recurrence_basis"),
    ),
    ("time_zone", "VARCHAR(64) DEFAULT 'UTC' NOT NULL", "VARCHAR(64) DEFAULT 'UTC' NOT NULL"),
    ("series_id", "BIGINT", "INTEGER"),
    ("series_start", "TIMESTAMP WITH TIME ZONE", "DATETIME"),
    ("occurrence", "INTEGER DEFAULT 1 NOT NULL", "INTEGER DEFAULT 1 NOT NULL"),
    ("next_task_id", "BIGINT", "INTEGER"),
]

TAG_TRIGGERS = ("task_tags_insert", "task_tags_update", "task_tags_trash")
TAG_FUNCTIONS = ("task_tags_apply", "task_tags_live")

# PostgreSQL: row-level triggers (a trigger on `UPDATE OF tags` cannot have transition tables); the WHEN clauses
# spare the call for tasks without tags and for updates that leave the tags (or the task's state) alone. An UPDATE
# that changes both tags and trashed_at runs both; either order leaves the rows right.
PG_TAGS_FUNCTION = """
CREATE FUNCTION task_tags_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM task_tags WHERE task_id = NEW.id;
    END IF;
    INSERT INTO task_tags (task_id, user_id, name, name_lower, live)
    SELECT NEW.id, NEW.user_id, element.name, lower(element.name), NEW.trashed_at IS NULL
    FROM jsonb_array_elements_text(NEW.tags) WITH ORDINALITY AS element(name, n)
    WHERE element.name IS NOT NULL
    ORDER BY element.n
    ON CONFLICT (task_id, name_lower) DO NOTHING;
    RETURN NULL;
END
$$
"""
PG_LIVE_FUNCTION = """
CREATE FUNCTION task_tags_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_tags SET live = NEW.trashed_at IS NULL WHERE task_id = NEW.id;
    RETURN NULL;
END
$$
"""
_STATE_CHANGES = "(OLD.trashed_at IS NULL) <> (NEW.trashed_at IS NULL)"
PG_TAGS_TRIGGERS = [
    "CREATE TRIGGER task_tags_insert AFTER INSERT ON tasks FOR EACH ROW WHEN (NEW.tags <> '[]'::jsonb) "
    "EXECUTE FUNCTION task_tags_apply()",
    "CREATE TRIGGER task_tags_update AFTER UPDATE OF tags ON tasks "
    "FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags) EXECUTE FUNCTION task_tags_apply()",
    "CREATE TRIGGER task_tags_trash AFTER UPDATE OF trashed_at ON tasks "
    f"FOR EACH ROW WHEN ({_STATE_CHANGES} AND NEW.tags <> '[]'::jsonb) EXECUTE FUNCTION task_tags_live()",
]
# SQLite: json_each's `key` is the position in the array. (An INSERT ... SELECT with an upsert clause needs the
# WHERE to parse.)
_SQLITE_INSERT_TAGS = (
    "INSERT INTO task_tags (task_id, user_id, name, name_lower, live) "
    "SELECT NEW.id, NEW.user_id, value, lower(value), NEW.trashed_at IS NULL FROM json_each(NEW.tags) "
    "WHERE value IS NOT NULL ORDER BY key "
    "ON CONFLICT (task_id, name_lower) DO NOTHING;"
)
SQLITE_TAGS_TRIGGERS = [
    f"CREATE TRIGGER task_tags_insert AFTER INSERT ON tasks WHEN NEW.tags <> '[]' BEGIN {_SQLITE_INSERT_TAGS} END",
    "CREATE TRIGGER task_tags_update AFTER UPDATE OF tags ON tasks WHEN OLD.tags IS NOT NEW.tags BEGIN "
    f"DELETE FROM task_tags WHERE task_id = NEW.id; {_SQLITE_INSERT_TAGS} END",
    f"CREATE TRIGGER task_tags_trash AFTER UPDATE OF trashed_at ON tasks WHEN {_STATE_CHANGES} AND NEW.tags <> '[]' "
    "BEGIN UPDATE task_tags SET live = NEW.trashed_at IS NULL WHERE task_id = NEW.id; END",
]
# The partial indexes' predicates (the models say the same, tasks/models.py). PostgreSQL reads a query's
# `live = true` as `live`; SQLite needs the very term the queries use.
LIVE_TAGS: dict[str, Any] = {"postgresql_where": sa.text("live"), "sqlite_where": sa.text("live = 1")}
_UNTAGGED = sa.text("trashed_at IS NULL AND tags = '[]'")
LIVE_UNTAGGED: dict[str, Any] = {"postgresql_where": _UNTAGGED, "sqlite_where": _UNTAGGED}


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _is_postgresql():
        # One ALTER TABLE: constant defaults need no rewrite (PostgreSQL >= 11); the CHECKs scan the table once.
        op.execute(
            "ALTER TABLE tasks "
            + ", ".join(
                [f"ADD COLUMN {name} {definition}" for name, definition, _ in COLUMNS]
                + [f"ADD CONSTRAINT {name} CHECK ({condition})" for name, condition in CHECKS.items()]
            )
        )
    else:
        for name, _, definition in COLUMNS:
            op.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")

    op.create_table(
        "task_tags",
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("name_lower", sa.String(length=80), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_tags_task_id_tasks", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_task_tags_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "name_lower", name="pk_task_tags"),
    )
    # A user's tasks with a tag, live or trashed (renaming or deleting a tag).
    op.create_index("ix_task_tags_user_id_name_lower", "task_tags", ["user_id", "name_lower", "task_id"])
    # A user's live tasks with a tag (the tag filters, and their counts from the index alone), and the tag list.
    # Without `name`: one user's counts read the index only while it is smaller than the table.
    op.create_index(
        "ix_task_tags_live_user_id_name_lower", "task_tags", ["user_id", "name_lower", "task_id"], **LIVE_TAGS
    )
    # `untagged`: a user's live tasks without tags, newest first, and their count.
    op.create_index(
        "ix_tasks_live_untagged_user_id_created_at", "tasks", ["user_id", "created_at", "id"], **LIVE_UNTAGGED
    )

    if _is_postgresql():
        op.execute(PG_TAGS_FUNCTION)
        op.execute(PG_LIVE_FUNCTION)
        for trigger in PG_TAGS_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in SQLITE_TAGS_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    postgresql = _is_postgresql()
    for trigger in TAG_TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger} ON tasks" if postgresql else f"DROP TRIGGER {trigger}")
    if postgresql:
        for function in TAG_FUNCTIONS:
            op.execute(f"DROP FUNCTION {function}()")
    op.drop_index("ix_tasks_live_untagged_user_id_created_at", table_name="tasks")
    op.drop_index("ix_task_tags_live_user_id_name_lower", table_name="task_tags")
    op.drop_index("ix_task_tags_user_id_name_lower", table_name="task_tags")
    op.drop_table("task_tags")

    if postgresql:
        op.execute(
            "ALTER TABLE tasks "
            + ", ".join(
                [f"DROP CONSTRAINT {name}" for name in CHECKS]
                + [f"DROP COLUMN {name}" for name, _, _ in reversed(COLUMNS)]
            )
        )
    else:
        # Each CHECK goes with the column it was declared on.
        for name, _, _ in reversed(COLUMNS):
            op.execute(f"ALTER TABLE tasks DROP COLUMN {name}")
