"""completed_at indexes: `sort_by=completed_at` walks an index instead of sorting every live task

Revision ID: 0005_completed_at_indexes
Revises: 0004_idempotency_keys
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_completed_at_indexes"
down_revision: str | None = "0004_idempotency_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("trashed_at IS NULL")


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # Earliest completed first with open tasks last (on SQLite also latest first: NULLs sort lowest there), as the
    # due date's indexes do.
    op.create_index(
        "ix_tasks_live_user_id_completed_at",
        "tasks",
        ["user_id", "completed_at", "id"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    if _is_postgresql():
        # PostgreSQL sorts NULLs highest: latest first with open tasks last needs its own order.
        op.create_index(
            "ix_tasks_live_user_id_completed_at_desc",
            "tasks",
            ["user_id", sa.text("completed_at DESC NULLS LAST"), sa.text("id DESC")],
            postgresql_where=LIVE,
        )


def downgrade() -> None:
    if _is_postgresql():
        op.drop_index("ix_tasks_live_user_id_completed_at_desc", table_name="tasks")
    op.drop_index("ix_tasks_live_user_id_completed_at", table_name="tasks")
