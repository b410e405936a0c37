"""The one error type the service raises, and the handlers that turn every failure into `{"detail": ...}`.

Every error body and its headers come from here: `error_response` renders an AppError for the handlers (and the
readiness check), `send_error` sends one from raw ASGI middleware, which runs outside FastAPI's handlers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from todo_api.logs import audit

logger = logging.getLogger(__name__)

# Fields whose submitted value must never come back in a 422 body.
SECRET_FIELDS = frozenset(
    {
        "password",
        "current_password",
        "new_password",
        "token",
        "access_token",
        "refresh_token",
        "client_secret",
    }
)
DB_RETRY_AFTER_SECONDS = "5"


class AppError(Exception):
    status_code = 500
    detail = "Internal Server Error"

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status_code = 400
    detail = "Bad request"


class Unauthorized(AppError):
    status_code = 401
    detail = "Could not validate credentials"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    detail = "Forbidden"


class NotFound(AppError):
    status_code = 404
    detail = "Not found"


class Conflict(AppError):
    status_code = 409
    detail = "Conflict"


class PreconditionFailed(AppError):
    """412: `If-Match` names a version that is no longer current. The body is the current resource itself, as its own
    200 would render it (`responses.task_json`), not `{"detail": ...}`, so the client can merge and retry."""

    status_code = 412
    detail = "Precondition failed"

    def __init__(self, current: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(headers=headers)
        self.current = current


# misc: HTTPException's `headers` may be None, AppError's are a dict (`__init__` below sets a dict).
class PayloadTooLarge(AppError, StarletteHTTPException):  # type: ignore[misc]
    """413: the request body is over MAX_BODY_BYTES (`middleware.InputLimitMiddleware`).

    Also a Starlette HTTPException for one reason: a chunked body that outgrows the limit raises this from inside
    FastAPI's body reading, which re-raises HTTPExceptions but turns any other exception into a 400. Handlers are
    looked up along the MRO, where AppError comes first, so `app_error_handler` renders it like any other AppError.
    """

    status_code = 413
    detail = "Request body too large"

    def __init__(self) -> None:
        # Not AppError.__init__: its super() is HTTPException here, which takes the status code first.
        StarletteHTTPException.__init__(self, self.status_code, self.detail)
        self.headers = {}


class UnprocessableEntity(AppError):
    status_code = 422
    detail = "Unprocessable entity"


class TooManyRequests(AppError):
    """429, with `Retry-After`; every one is audited (`rate_limited`)."""

    status_code = 429
    detail = "Too many requests"

    def __init__(self, retry_after: int, limit: str = "") -> None:
        audit("rate_limited", limit=limit, retry_after=retry_after)
        super().__init__(
            f"Too many requests; retry in {retry_after} seconds", headers={"Retry-After": str(retry_after)}
        )


class HeaderFieldsTooLarge(AppError):
    """431: the request headers together are over `middleware.MAX_HEADER_BYTES`."""

    status_code = 431
    detail = "Request header fields too large"


class ServiceUnavailable(AppError):
    status_code = 503
    detail = "Service temporarily unavailable, please retry"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": DB_RETRY_AFTER_SECONDS})


class ErrorResponse(BaseModel):
    detail: str


class ValidationErrorItem(BaseModel):
    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationErrorItem] | str


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked token (`WWW-Authenticate: Bearer`)",
    404: "Not found (another user's resource answers exactly the same)",
    409: "Conflict with existing data",
    412: "If-Match does not match the current version; the body is the current resource",
    413: "Request body larger than MAX_BODY_BYTES",
    422: "Invalid input",
    429: "Rate limit exceeded (`Retry-After` says when to retry)",
    503: "Database unavailable (`Retry-After` says when to retry)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can return, each with its body schema."""
    return {
        code: {
            "model": ValidationErrorResponse if code == 422 else ErrorResponse,
            "description": _DESCRIPTIONS[code],
        }
        for code in codes
    }


def _error(status_code: int, detail: object, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=dict(headers or {}))


def error_response(error: AppError) -> JSONResponse:
    """An AppError as its response: `{"detail": ...}` with the error's status and headers."""
    return _error(error.status_code, error.detail, error.headers)


async def send_error(send: Send, error: AppError) -> None:
    """An AppError as a raw ASGI response, for middleware that answers before the app (and its handlers) runs.

    The body is `json.dumps`'s (`{"detail": "..."}`, a space after each separator), as these responses always were.
    """
    body = json.dumps({"detail": error.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _redact(errors: list[dict[str, object]]) -> list[dict[str, object]]:
    """Validation errors without submitted secrets (or anything unserializable, such as raw bytes)."""
    cleaned = []
    for error in errors:
        item = {k: v for k, v in error.items() if k in {"type", "loc", "msg", "ctx"}}
        loc = error.get("loc") or ()
        if "input" in error and not (isinstance(loc, tuple | list) and SECRET_FIELDS.intersection(map(str, loc))):
            value = error["input"]
            if isinstance(value, str | int | float | bool | type(None)):
                item["input"] = value
        if "ctx" in item and isinstance(item["ctx"], dict):
            item["ctx"] = {k: str(v) if isinstance(v, Exception) else v for k, v in item["ctx"].items()}
        cleaned.append(item)
    return cleaned


async def app_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if isinstance(exc, PreconditionFailed):
        # The resource's JSON, rendered as its 200 is (`responses.task_json`).
        return Response(exc.current, status_code=exc.status_code, media_type="application/json", headers=exc.headers)
    return error_response(exc)


async def http_exception_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, exc.detail, exc.headers)


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error(422, _redact(list(exc.errors())))


def is_database_unavailable(exc: Exception) -> bool:
    """The database could not be reached, dropped the connection, or cut a statement: the client may retry.

    OperationalError covers refused and lost connections, timeouts (QueryCanceled from the statement timeout)
    and a server that is shutting down; other DBAPI errors count only when they cost the connection (psycopg2
    says "connection already closed" with an InterfaceError). Everything else (ProgrammingError, an
    IntegrityError no service handled) is a bug and stays a 500.
    """
    if isinstance(exc, PoolTimeoutError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        raise exc  # on to the 500 handler, which logs the traceback
    # One line, without the SQL or its parameters (str(exc) has both): the driver's own first line says why.
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    reason = str(cause).strip().partition("\n")[0][:200]
    path = getattr(request.scope.get("route"), "path", request.url.path)  # the template: no ids in the log
    logger.error("database unavailable: %s %s: %s: %s", request.method, path, type(cause).__name__, reason)
    return error_response(ServiceUnavailable())


async def unhandled_error_handler(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return _error(500, "Internal Server Error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(PoolTimeoutError, database_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
