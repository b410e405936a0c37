"""Fixtures shared by the task tests."""

from __future__ import annotations

import pytest

from tests.factories import UserFactory
from tests.tasks.helpers import Actor, local_actor


@pytest.fixture
def actor(users: UserFactory) -> Actor:
    """A registered local user (tests that need a second user or a Better Auth one make their own)."""
    return local_actor(users)
