"""Fixtures of the auth tests beyond the suite-wide ones."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.auth.helpers import guard


@pytest.fixture
def api(client: TestClient) -> TestClient:
    """The `client`, failing any request whose response carries a password, a hash or the secret."""
    return guard(client)
