"""task querying: version, trash, and the indexes behind filters, sorting, search and statistics

Revision ID: 0002_task_querying
Revises: 0001_initial
Create Date: 2026-11-21
"""

from collections.abc import Sequence

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


def upgrade() -> None:
    # Plain ALTER TABLE on both backends (SQLite >= 3.35 adds and drops columns in place): rebuilding the
    # table in batch mode would reflect and re-apply the constraint names and lose AUTOINCREMENT.
    with op.batch_alter_table("tasks", recreate="never") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("trashed_at", sa.DateTime(timezone=True), nullable=True))

    # The initial index covered trashed rows too; the live listing now reads a partial index.
    op.drop_index("ix_tasks_user_id_created_at", table_name="tasks")
    live = {"postgresql_where": LIVE, "sqlite_where": LIVE}
    op.create_index("ix_tasks_live_user_id_created_at", "tasks", ["user_id", "created_at", "id"], **live)
    op.create_index("ix_tasks_user_id_updated_at", "tasks", ["user_id", "updated_at", "id"])
    op.create_index("ix_tasks_live_user_id_due_date", "tasks", ["user_id", "due_date", "id"], **live)
    op.create_index("ix_tasks_live_user_id_priority_rank", "tasks", ["user_id", PRIORITY_RANK, "id"], **live)
    op.create_index(
        "ix_tasks_live_user_id_stats",
        "tasks",
        ["user_id", "completed", "priority", "category", "due_date"],
        **live,
    )
    op.create_index(
        "ix_tasks_trashed_user_id",
        "tasks",
        ["user_id", "trashed_at"],
        postgresql_where=TRASHED,
        sqlite_where=TRASHED,
    )

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
    op.drop_index("ix_tasks_live_user_id_stats", table_name="tasks")
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
