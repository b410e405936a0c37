"""Annotated field types shared by request schemas (text that PostgreSQL can store, normalized emails)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, EmailStr, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _strip_lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


NoNul = AfterValidator(_no_nul)
"""Refuses NUL characters (PostgreSQL cannot store them). Put it after any StringConstraints, which must come
first in the Annotated list so that lengths are counted after stripping."""

Text = Annotated[str, NoNul]

Email = Annotated[EmailStr, BeforeValidator(_strip_lower), AfterValidator(_no_nul)]
"""An email address, trimmed and lower-cased, so lookups and the unique index agree."""

LoginEmail = Annotated[str, BeforeValidator(_strip_lower), StringConstraints(max_length=320), AfterValidator(_no_nul)]
"""What a login form sends: not re-validated as an address, so any unknown value is just a failed login."""
