"""Upgrade the database named by DATABASE_URL (or .env) to the newest schema."""

from todo_api.migrations import upgrade

if __name__ == "__main__":
    upgrade()
