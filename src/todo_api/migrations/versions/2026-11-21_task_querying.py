"""task querying: version, trash, per-user task counts, and the indexes behind filters, sorting and search

Revision ID: 0002_task_querying
Revises: 0001_initial
Create Date: 2026-11-21
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002_task_querying"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("trashed_at IS NULL")
TRASHED = sa.text("trashed_at IS NOT NULL")
# Must stay textually identical to todo_api.tasks.models.PRIORITY_RANK, or the planner will not match it.
PRIORITY_RANK = sa.text("(CASE priority WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END)")


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


# task_counts holds, per user, how many tasks there are in each (category, priority, completed, trashed)
# bucket, kept exact by triggers on tasks, so totals and statistics need not count 100,000 rows.
# PostgreSQL: statement-level triggers add up each statement's changes and touch the counts last, in key
# order (a bulk UPDATE of 500 tasks writes each bucket once; concurrent writers cannot deadlock on them).
# Deletes only subtract: when a user is deleted, the cascades may remove their counts first.
_PG_BUCKETS = """
    SELECT user_id, coalesce(category, '') AS category, priority, completed,
           trashed_at IS NOT NULL AS trashed, {sign} count(*) AS n
    FROM {rows} GROUP BY 1, 2, 3, 4, 5
"""
PG_COUNT_FUNCTION = f"""
CREATE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE task_counts AS c SET n = c.n + d.n
        FROM ({_PG_BUCKETS.format(sign="-", rows="old_tasks")}) AS d
        WHERE (c.user_id, c.category, c.priority, c.completed, c.trashed)
            = (d.user_id, d.category, d.priority, d.completed, d.trashed);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts AS c (user_id, category, priority, completed, trashed, n)
        {_PG_BUCKETS.format(sign="", rows="new_tasks")}
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (user_id, category, priority, completed, trashed) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO task_counts AS c (user_id, category, priority, completed, trashed, n)
        SELECT user_id, category, priority, completed, trashed, sum(n) FROM (
            {_PG_BUCKETS.format(sign="", rows="new_tasks")}
            UNION ALL
            {_PG_BUCKETS.format(sign="-", rows="old_tasks")}
        ) AS changes
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(n) <> 0
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (user_id, category, priority, completed, trashed) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$
"""
PG_COUNT_TRIGGERS = [
    "CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_tasks "
    "FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply()",
    "CREATE TRIGGER task_counts_update AFTER UPDATE ON tasks "
    "REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks "
    "FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply()",
    "CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_tasks "
    "FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply()",
]
# SQLite has row-level triggers only (and one writer at a time, so no ordering is needed).
_SQLITE_BUCKET = (
    "user_id = OLD.user_id AND category = coalesce(OLD.category, '') AND priority = OLD.priority "
    "AND completed = OLD.completed AND trashed = (OLD.trashed_at IS NOT NULL)"
)
_SQLITE_ADD = (
    "INSERT INTO task_counts (user_id, category, priority, completed, trashed, n) "
    "VALUES (NEW.user_id, coalesce(NEW.category, ''), NEW.priority, NEW.completed, "
    "NEW.trashed_at IS NOT NULL, 1) "
    "ON CONFLICT (user_id, category, priority, completed, trashed) DO UPDATE SET n = n + 1;"
)
_SQLITE_SUBTRACT = f"UPDATE task_counts SET n = n - 1 WHERE {_SQLITE_BUCKET};"
SQLITE_COUNT_TRIGGERS = [
    f"CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN {_SQLITE_ADD} END",
    f"CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN {_SQLITE_SUBTRACT} END",
    "CREATE TRIGGER task_counts_update AFTER UPDATE OF user_id, category, priority, completed, trashed_at "
    f"ON tasks BEGIN {_SQLITE_SUBTRACT} {_SQLITE_ADD} END",
]


def upgrade() -> None:
    # Plain ALTER TABLE on both backends (SQLite >= 3.35 adds and drops columns in place): rebuilding the
    # table in batch mode would reflect and re-apply the constraint names and lose AUTOINCREMENT.
    with op.batch_alter_table("tasks", recreate="never") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("trashed_at", sa.DateTime(timezone=True), nullable=True))

    # The initial index covered trashed rows too; the live listing now reads a partial index.
    op.drop_index("ix_tasks_user_id_created_at", table_name="tasks")
    live: dict[str, Any] = {"postgresql_where": LIVE, "sqlite_where": LIVE}
    op.create_index("ix_tasks_live_user_id_created_at", "tasks", ["user_id", "created_at", "id"], **live)
    op.create_index("ix_tasks_user_id_updated_at", "tasks", ["user_id", "updated_at", "id"])
    op.create_index("ix_tasks_live_user_id_due_date", "tasks", ["user_id", "due_date", "id"], **live)
    op.create_index("ix_tasks_live_user_id_priority_rank", "tasks", ["user_id", PRIORITY_RANK, "id"], **live)
    op.create_index("ix_tasks_live_user_id_title", "tasks", ["user_id", sa.text("lower(title)"), "id"], **live)
    # Pending tasks by due date: overdue, due today.
    op.create_index("ix_tasks_live_user_id_completed_due_date", "tasks", ["user_id", "completed", "due_date"], **live)
    # The category filter (case-insensitive), with status and priority; also gives the planner statistics on
    # lower(category).
    op.create_index(
        "ix_tasks_live_user_id_category",
        "tasks",
        ["user_id", sa.text("lower(category)"), "completed", "priority"],
        **live,
    )
    op.create_index(
        "ix_tasks_trashed_user_id",
        "tasks",
        ["user_id", "trashed_at"],
        postgresql_where=TRASHED,
        sqlite_where=TRASHED,
    )

    op.create_table(
        "task_counts",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("trashed", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_task_counts_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "category", "priority", "completed", "trashed", name="pk_task_counts"),
    )
    op.execute(
        "INSERT INTO task_counts (user_id, category, priority, completed, trashed, n) "
        "SELECT user_id, coalesce(category, ''), priority, completed, trashed_at IS NOT NULL, count(*) "
        "FROM tasks GROUP BY user_id, coalesce(category, ''), priority, completed, trashed_at IS NOT NULL"
    )
    if _is_postgresql():
        op.execute(PG_COUNT_FUNCTION)
        for trigger in PG_COUNT_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in SQLITE_COUNT_TRIGGERS:
            op.execute(trigger)

    if _is_postgresql():
        # PostgreSQL sorts NULLs highest: latest-due-first with undated tasks last needs its own index order
        # (on SQLite that is the index above read backwards).
        op.create_index(
            "ix_tasks_live_user_id_due_date_desc",
            "tasks",
            ["user_id", sa.text("due_date DESC NULLS LAST"), sa.text("id DESC")],
            postgresql_where=LIVE,
        )
        # Trigram indexes make ILIKE '%term%' searchable. The extension is database-wide and may have been
        # there before (or be used by others), so the downgrade leaves it installed.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_tasks_title_trgm",
            "tasks",
            ["title"],
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        )
        op.create_index(
            "ix_tasks_description_trgm",
            "tasks",
            ["description"],
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        )


def downgrade() -> None:
    if _is_postgresql():
        op.drop_index("ix_tasks_description_trgm", table_name="tasks")
        op.drop_index("ix_tasks_title_trgm", table_name="tasks")
        op.drop_index("ix_tasks_live_user_id_due_date_desc", table_name="tasks")
    op.drop_index("ix_tasks_trashed_user_id", table_name="tasks")
    for trigger in ("task_counts_insert", "task_counts_update", "task_counts_delete"):
        op.execute(f"DROP TRIGGER {trigger} ON tasks" if _is_postgresql() else f"DROP TRIGGER {trigger}")
    if _is_postgresql():
        op.execute("DROP FUNCTION task_counts_apply()")
    op.drop_table("task_counts")
    op.drop_index("ix_tasks_live_user_id_category", table_name="tasks")
    op.drop_index("ix_tasks_live_user_id_title", table_name="tasks")
    op.drop_index("ix_tasks_live_user_id_completed_due_date", table_name="tasks")
    op.drop_index("ix_tasks_live_user_id_priority_rank", table_name="tasks")
    op.drop_index("ix_tasks_live_user_id_due_date", table_name="tasks")
    op.drop_index("ix_tasks_user_id_updated_at", table_name="tasks")
    op.drop_index("ix_tasks_live_user_id_created_at", table_name="tasks")
    op.create_index("ix_tasks_user_id_created_at", "tasks", ["user_id", "created_at", "id"])

    # Before 0002 trashed tasks did not exist: they go with the trash (the table must not keep them as live).
    op.execute("DELETE FROM tasks WHERE trashed_at IS NOT NULL")
    with op.batch_alter_table("tasks", recreate="never") as batch:
        batch.drop_column("trashed_at")
        batch.drop_column("version")
