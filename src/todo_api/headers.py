"""HTTP header helpers: entity tags and conditional requests (RFC 9110), paging links (RFC 8288)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.datastructures import URL

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, in a comma-separated list.
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
MAX_VERSION = 2**31 - 1


def etag(version: int) -> str:
    """The strong entity tag of a resource version."""
    return f'"{version}"'


def _tags(values: Iterable[str]) -> list[tuple[bool, str]]:
    """(weak, opaque-tag) of every well-formed entity tag in the header lines; malformed ones are skipped."""
    return [(bool(m.group(1)), m.group(2)) for value in values for m in _ENTITY_TAG.finditer(value)]


def _version(tag: str) -> int | None:
    return int(tag) if tag.isascii() and tag.isdigit() and 0 < int(tag) <= MAX_VERSION else None


def if_match_versions(values: list[str] | None) -> frozenset[int] | None:
    """The versions an `If-Match` header accepts, or None when any version will do (no header, or `*`).

    Strong comparison: weak tags and tags that are no version of ours match nothing, so a header made only
    of those gives an empty set (the precondition fails).
    """
    if not values or any(value.strip() == "*" for value in values):
        return None
    return frozenset(version for weak, tag in _tags(values) if not weak and (version := _version(tag)) is not None)


def not_modified(values: list[str] | None, version: int) -> bool:
    """True when `If-None-Match` matches the current version (`*`, or a tag under weak comparison)."""
    if not values:
        return False
    if any(value.strip() == "*" for value in values):
        return True
    return any(_version(tag) == version for _, tag in _tags(values))


def paging_links(url: URL, *, offset: int, limit: int, total: int) -> str | None:
    """An RFC 8288 `Link` header with absolute `next` / `prev` URLs (other query parameters kept)."""
    links = []
    if offset + limit < total:
        links.append(f'<{url.include_query_params(offset=offset + limit, limit=limit)}>; rel="next"')
    if offset > 0:
        previous = max(min(offset, total) - limit, 0)
        links.append(f'<{url.include_query_params(offset=previous, limit=limit)}>; rel="prev"')
    return ", ".join(links) or None


def page_headers(url: URL, *, offset: int, limit: int, total: int) -> dict[str, str]:
    """`X-Total-Count`, and `Link` when there is another page."""
    headers = {"X-Total-Count": str(total)}
    links = paging_links(url, offset=offset, limit=limit, total=total)
    if links:
        headers["Link"] = links
    return headers
