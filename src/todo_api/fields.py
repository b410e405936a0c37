"""Annotated field types shared by request schemas (text that PostgreSQL can store, normalized emails)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, EmailStr, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def strip_lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


NoNul = AfterValidator(_no_nul)
"""Refuses NUL characters (PostgreSQL cannot store them). Put it after any StringConstraints, which must come
first in the Annotated list so that lengths are counted after stripping."""

Email = Annotated[EmailStr, BeforeValidator(strip_lower), AfterValidator(_no_nul)]
"""An email address, trimmed and lower-cased, so lookups and the unique index agree."""

LoginEmail = Annotated[str, BeforeValidator(strip_lower), StringConstraints(max_length=320), AfterValidator(_no_nul)]
"""What a login form sends: not re-validated as an address, so any unknown value is just a failed login."""


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("may be omitted but not null")
    return value


NotNull = BeforeValidator(_not_null)
"""For partial updates: a field may be left out (unchanged), but an explicit null is a mistake. Validators do
not run on defaults, so this only sees values that were sent."""
