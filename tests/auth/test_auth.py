"""Black-box tests of /api/auth: registration, password login, the OAuth2 form, our and Better Auth tokens."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import bcrypt
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.factories import (
    PASSWORD,
    TEST_SECRET,
    RegisteredUser,
    UserFactory,
    bearer,
    better_auth_token,
    unique_email,
)
from todo_api.auth.models import User
from todo_api.security import is_common_password

if TYPE_CHECKING:
    from tests.conftest import LiveServer

REGISTER = "/api/auth/register"
LOGIN = "/api/auth/login"
TOKEN = "/api/auth/token"
ME = "/api/auth/me"

EXPIRES_IN = 604800
ISSUER = "todo-api"
AUTH_KEYS = {"message", "user", "access_token", "refresh_token", "token_type", "expires_in"}
USER_KEYS = {"id", "email", "name", "created_at", "notification_channels"}
INVALID_LOGIN = {"detail": "Incorrect email or password"}
EMAIL_TAKEN = {"detail": "Email already registered"}

Response = httpx.Response


# --------------------------------------------------------------------------------------------- helpers


def register(client: TestClient, *, email: str, password: str = PASSWORD, name: str = "Test User") -> Response:
    return client.post(REGISTER, json={"name": name, "email": email, "password": password})


def login(client: TestClient, email: str, password: str) -> Response:
    return client.post(LOGIN, json={"email": email, "password": password})


def me(client: TestClient, headers: dict[str, str]) -> Response:
    return client.get(ME, headers=headers)


def parse_aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None and parsed.utcoffset() is not None, value
    return parsed


def assert_user_object(user: Any, *, email: str | None, name: str) -> None:
    assert isinstance(user, dict)
    assert set(user) == USER_KEYS
    assert isinstance(user["id"], str) and user["id"]
    assert user["email"] == email
    assert user["name"] == name
    parse_aware(user["created_at"])


def assert_auth_response(response: Response, *, status: int, message: str, email: str, name: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == AUTH_KEYS
    assert body["message"] == message
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == EXPIRES_IN
    assert isinstance(body["access_token"], str) and body["access_token"].count(".") == 2
    assert_user_object(body["user"], email=email, name=name)


def assert_no_secret(response: Response, password: str) -> None:
    text = response.text
    assert password not in text
    assert json.dumps(password)[1:-1] not in text  # also not in its JSON-escaped form
    assert "password_hash" not in text
    assert "$2b$" not in text and "$bcrypt-sha256$" not in text


def assert_unauthorized(response: Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str) and body["detail"]
    return dict(body)


def error_locs(response: Response) -> list[tuple[str | int, ...]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    return [tuple(error["loc"]) for error in detail]


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, TEST_SECRET, algorithms=["HS256"], options={"verify_aud": False}))


def sign(claims: dict[str, Any], *, key: Any = TEST_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # A 47-byte key is "short" for HS384/HS512; the point here is that the server refuses them anyway.
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned_token(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{b64url_json({'alg': alg, 'typ': 'JWT'})}.{b64url_json(claims)}."


def new_sub() -> str:
    return f"ba_{uuid.uuid4().hex}"


# --------------------------------------------------------------------------------------------- register


def test_register_returns_user_and_token(client: TestClient) -> None:
    email = unique_email("reg")
    response = register(client, email=email, name="Ada Lovelace")

    assert_auth_response(response, status=201, message="User registered successfully", email=email, name="Ada Lovelace")
    body = response.json()
    assert str(uuid.UUID(body["user"]["id"])) == body["user"]["id"]
    assert_no_secret(response, PASSWORD)
    without_token = json.dumps(body | {"access_token": "", "refresh_token": ""})
    assert "password" not in without_token
    assert "hash" not in without_token


def test_register_token_is_usable_immediately(client: TestClient) -> None:
    email = unique_email("reg")
    body = register(client, email=email).json()

    response = me(client, bearer(body["access_token"]))

    assert response.status_code == 200, response.text
    assert response.json() == body["user"]


def test_register_stores_a_bcrypt_sha256_hash(client: TestClient, db_session: Session) -> None:
    email = unique_email("hash")
    body = register(client, email=email).json()

    row = db_session.get(User, body["user"]["id"])

    assert row is not None and row.password_hash is not None
    assert row.password_hash.startswith("$bcrypt-sha256$")
    assert PASSWORD not in row.password_hash


def test_register_normalizes_email(client: TestClient) -> None:
    local = unique_email("Mixed")
    response = register(client, email=f"  {local.upper()}  ")

    assert response.status_code == 201, response.text
    assert response.json()["user"]["email"] == local.lower()
    assert login(client, local.lower(), PASSWORD).status_code == 200


@pytest.mark.parametrize(
    "variant",
    [str.upper, lambda e: f"  {e}  ", lambda e: f"\t{e.title()}\n", lambda e: e],
    ids=["upper", "spaces", "tabs-title", "identical"],
)
def test_register_duplicate_email_conflicts(
    client: TestClient, users: UserFactory, variant: Callable[[str], str]
) -> None:
    original = users.create()

    response = register(client, email=variant(original.email), password="another good passphrase")

    assert response.status_code == 409, response.text
    assert response.json() == EMAIL_TAKEN
    # The first account is untouched and the request that failed left the session usable.
    assert login(client, original.email, original.password).json()["user"]["id"] == original.id
    assert login(client, original.email, "another good passphrase").status_code == 401


def test_register_conflict_with_better_auth_user_email(client: TestClient) -> None:
    email = unique_email("ba")
    assert me(client, bearer(better_auth_token(new_sub(), email=email, name="BA"))).status_code == 200

    response = register(client, email=email.upper())

    assert response.status_code == 409, response.text
    assert response.json() == EMAIL_TAKEN


@pytest.mark.parametrize(
    "email", ["not-an-email", "missing-at.example.com", "a@", "@example.com", "a b@example.com", ""]
)
def test_register_rejects_bad_email(client: TestClient, email: str) -> None:
    response = register(client, email=email)

    assert error_locs(response) == [("body", "email")]
    assert_no_secret(response, PASSWORD)


@pytest.mark.parametrize("missing", ["name", "email", "password"])
def test_register_rejects_missing_field(client: TestClient, missing: str) -> None:
    payload = {"name": "Test User", "email": unique_email(), "password": PASSWORD}
    del payload[missing]

    response = client.post(REGISTER, json=payload)

    assert error_locs(response) == [("body", missing)]
    assert response.json()["detail"][0]["type"] == "missing"
    assert_no_secret(response, PASSWORD)


def test_register_rejects_empty_body(client: TestClient) -> None:
    response = client.post(REGISTER, json={})

    assert sorted(error_locs(response)) == [("body", "email"), ("body", "name"), ("body", "password")]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101], ids=["empty", "blank", "101-chars"])
def test_register_rejects_bad_name(client: TestClient, name: str) -> None:
    response = register(client, email=unique_email(), name=name)

    assert error_locs(response) == [("body", "name")]


def test_register_accepts_name_of_100_chars(client: TestClient) -> None:
    name = "n" * 100
    response = register(client, email=unique_email(), name=name)

    assert response.status_code == 201, response.text
    assert response.json()["user"]["name"] == name


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Ada\x00Lovelace"), ("email", "ada\x00@example.com"), ("password", "pass\x00word-long-enough")],
)
def test_register_rejects_nul_bytes(client: TestClient, field: str, value: str) -> None:
    payload = {"name": "Test User", "email": unique_email(), "password": PASSWORD, field: value}

    response = client.post(REGISTER, json=payload)

    assert error_locs(response) == [("body", field)]
    assert_no_secret(response, payload["password"])


@pytest.mark.parametrize(
    ("password", "error_type"),
    [
        ("Sh0rt!x", "too_short"),  # 7 characters
        ("é" * 7, "too_short"),  # 14 bytes, but 7 characters
        ("", "too_short"),
        ("L0ng-" * 25 + "abcd", "too_long"),  # 129 characters
        ("é" * 129, "too_long"),
    ],
    ids=["7-chars", "7-two-byte-chars", "empty", "129-chars", "129-two-byte-chars"],
)
def test_register_rejects_password_length(client: TestClient, password: str, error_type: str) -> None:
    response = register(client, email=unique_email(), password=password)

    assert error_locs(response) == [("body", "password")]
    error = response.json()["detail"][0]
    assert error["type"].endswith(error_type)  # pydantic says "too_short" or "string_too_short"
    assert "input" not in error
    if password:
        assert_no_secret(response, password)


@pytest.mark.parametrize(
    "password",
    ["8chars!!", "🔐🔑🔒🔓🔏🦄🔥🌈", "é" * 128, "Z9-" * 42 + "zz", "🦄" * 128],
    ids=["8-chars", "8-emoji-chars", "128-two-byte-chars", "128-chars", "128-emoji"],
)
def test_register_accepts_password_length_bounds(client: TestClient, password: str) -> None:
    assert 8 <= len(password) <= 128
    email = unique_email()

    response = register(client, email=email, password=password)

    assert response.status_code == 201, response.text
    assert_no_secret(response, password)
    assert login(client, email, password).status_code == 200


@pytest.mark.parametrize("password", ["password123", "iloveyou1", "PassWord123", "qwertyuiop"])
def test_register_rejects_common_password(client: TestClient, password: str) -> None:
    assert is_common_password(password)

    response = register(client, email=unique_email(), password=password)

    assert error_locs(response) == [("body", "password")]
    error = response.json()["detail"][0]
    assert error["type"] == "value_error"
    assert "common" in error["msg"]
    assert "input" not in error
    assert_no_secret(response, password)
    assert password.lower() not in response.text.lower()


def test_register_common_password_with_other_errors_still_redacted(client: TestClient) -> None:
    response = client.post(REGISTER, json={"name": "", "email": "nope", "password": "iloveyou1"})

    assert sorted(error_locs(response)) == [("body", "email"), ("body", "name"), ("body", "password")]
    assert "iloveyou1" not in response.text
    by_field = {error["loc"][-1]: error for error in response.json()["detail"]}
    assert by_field["email"]["input"] == "nope"  # non-secret inputs may be echoed, secrets never
    assert "input" not in by_field["password"]


def test_register_rejects_non_json_body(client: TestClient) -> None:
    response = client.post(REGISTER, content=b"name=x&email=y", headers={"Content-Type": "text/plain"})

    assert response.status_code == 422, response.text
    assert set(response.json()) == {"detail"}


def test_unicode_password_registers_and_logs_in(client: TestClient) -> None:
    email = unique_email("uni")
    password = "Ünïcødé 🦄🔥 pässwörd ñ 中文"

    assert register(client, email=email, password=password).status_code == 201
    ok = login(client, email, password)
    wrong = login(client, email, password.replace("🦄", "🐴"))

    assert ok.status_code == 200, ok.text
    assert wrong.status_code == 401
    assert wrong.json() == INVALID_LOGIN


# ------------------------------------------------------------------------------- no bcrypt truncation


@pytest.mark.parametrize(
    ("prefix", "ending", "other_ending"),
    [
        ("K7#q" * 20, "-alpha-ending", "-omega-ending"),  # 80 ASCII characters in common
        ("🦄" * 19, "first", "other"),  # 76 bytes in common, but only 19 characters
        ("x9" * 36, "A", "B"),  # exactly 72 bytes in common, then one differing character
    ],
    ids=["ascii-80", "emoji-76-bytes", "ascii-72-plus-one"],
)
def test_every_character_of_a_long_password_counts(
    client: TestClient, prefix: str, ending: str, other_ending: str
) -> None:
    assert len(prefix.encode()) >= 72
    email = unique_email("long")
    password = prefix + ending
    assert len(password) <= 128

    assert register(client, email=email, password=password).status_code == 201
    wrong = login(client, email, prefix + other_ending)
    truncated = login(client, email, prefix)

    assert wrong.status_code == 401
    assert wrong.json() == INVALID_LOGIN
    assert truncated.status_code == 401
    assert login(client, email, password).status_code == 200


def test_hundred_char_password_differs_after_72_chars(client: TestClient) -> None:
    email = unique_email("long")
    password = ("Tr0ub4dor&3-" * 9)[:100]
    other = password[:80] + "0123456789abcdefghij"
    assert len(password) == len(other) == 100 and password != other

    assert register(client, email=email, password=password).status_code == 201

    assert login(client, email, other).json() == INVALID_LOGIN
    assert login(client, email, password).status_code == 200


@pytest.mark.parametrize("ident", [b"2b", b"2a"])
def test_legacy_plain_bcrypt_hash_still_verifies(client: TestClient, db_session: Session, ident: bytes) -> None:
    email = unique_email("legacy")
    password = "legacy pass phrase 1"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=ident)).decode()
    assert hashed.startswith(f"${ident.decode()}$")
    user = User(id=str(uuid.uuid4()), email=email, name="Legacy", password_hash=hashed)
    db_session.add(user)
    db_session.commit()

    response = login(client, email, password)

    assert_auth_response(response, status=200, message="Login successful", email=email, name="Legacy")
    assert response.json()["user"]["id"] == user.id
    assert login(client, email, "legacy pass phrase 2").json() == INVALID_LOGIN
    assert me(client, bearer(response.json()["access_token"])).json()["id"] == user.id


# ------------------------------------------------------------------------------------------ login


def test_login_returns_user_and_token(client: TestClient, users: UserFactory) -> None:
    user = users.create(name="Grace Hopper")

    response = login(client, user.email, user.password)

    assert_auth_response(response, status=200, message="Login successful", email=user.email, name="Grace Hopper")
    body = response.json()
    assert body["user"]["id"] == user.id
    assert parse_aware(body["user"]["created_at"]) == parse_aware(user.body["user"]["created_at"])
    assert_no_secret(response, user.password)
    assert me(client, bearer(body["access_token"])).json()["id"] == user.id


@pytest.mark.parametrize(
    "variant",
    [str.upper, lambda e: f"  {e}  ", lambda e: f" {e.title()}\t"],
    ids=["upper", "spaces", "title"],
)
def test_login_email_is_case_and_space_insensitive(
    client: TestClient, users: UserFactory, variant: Callable[[str], str]
) -> None:
    user = users.create()

    response = login(client, variant(user.email), user.password)

    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == user.id


def test_login_failures_are_indistinguishable(client: TestClient, users: UserFactory) -> None:
    user = users.create()

    wrong_password = login(client, user.email, user.password + "!")
    unknown_email = login(client, unique_email("nobody"), user.password)
    password_case = login(client, user.email, user.password.upper())

    for response in (wrong_password, unknown_email, password_case):
        assert response.status_code == 401
        assert response.json() == INVALID_LOGIN
        assert response.headers["www-authenticate"] == "Bearer"
    assert wrong_password.content == unknown_email.content == password_case.content


def test_login_of_better_auth_only_user_fails(client: TestClient) -> None:
    email = unique_email("ba")
    created = me(client, bearer(better_auth_token(new_sub(), email=email, name="BA Only")))
    assert created.status_code == 200, created.text

    response = login(client, email, PASSWORD)

    assert response.status_code == 401
    assert response.json() == INVALID_LOGIN
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("payload", "locs"),
    [
        ({"password": PASSWORD}, [("body", "email")]),
        ({"email": "a@example.com"}, [("body", "password")]),
        ({}, [("body", "email"), ("body", "password")]),
        ({"email": "a@example.com", "password": ""}, [("body", "password")]),
        ({"email": "a\x00@example.com", "password": PASSWORD}, [("body", "email")]),
    ],
    ids=["no-email", "no-password", "empty", "empty-password", "nul-email"],
)
def test_login_validation(client: TestClient, payload: dict[str, str], locs: list[tuple[str, ...]]) -> None:
    response = client.post(LOGIN, json=payload)

    assert sorted(error_locs(response)) == locs
    assert_no_secret(response, PASSWORD)


# ------------------------------------------------------------------------------- OAuth2 form /token


def test_token_form_login(client: TestClient, users: UserFactory) -> None:
    user = users.create()

    response = client.post(TOKEN, data={"username": f" {user.email.upper()} ", "password": user.password})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type"}
    assert body["token_type"] == "bearer"
    assert me(client, bearer(body["access_token"])).json()["id"] == user.id


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "not-an-email"])
def test_token_form_rejects_bad_credentials(client: TestClient, users: UserFactory, case: str) -> None:
    user = users.create()
    username, password = {
        "wrong-password": (user.email, "not the password"),
        "unknown-user": (unique_email("nobody"), user.password),
        "not-an-email": ("x" * 400, user.password),
    }[case]

    response = client.post(TOKEN, data={"username": username, "password": password})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == INVALID_LOGIN


@pytest.mark.parametrize(
    ("data", "locs"),
    [
        ({"password": PASSWORD}, [("body", "username")]),
        ({"username": "a@example.com"}, [("body", "password")]),
        ({}, [("body", "password"), ("body", "username")]),
    ],
    ids=["no-username", "no-password", "empty"],
)
def test_token_form_missing_fields(client: TestClient, data: dict[str, str], locs: list[tuple[str, ...]]) -> None:
    response = client.post(TOKEN, data=data)

    assert sorted(error_locs(response)) == locs
    assert_no_secret(response, PASSWORD)


def test_openapi_declares_token_url_for_authorize_button(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]

    flows = [scheme["flows"]["password"] for scheme in schemes.values() if scheme["type"] == "oauth2"]
    assert flows == [{"scopes": {}, "tokenUrl": "/api/auth/token"}]


# ----------------------------------------------------------------------------------------------- me


def test_me_returns_exactly_the_public_user(client: TestClient, users: UserFactory) -> None:
    user = users.create(name="Alan Turing")

    response = me(client, user.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == USER_KEYS
    assert body == {
        "id": user.id,
        "email": user.email,
        "name": "Alan Turing",
        "created_at": body["created_at"],
        "notification_channels": ["email", "push"],
    }
    assert parse_aware(body["created_at"]) == parse_aware(user.body["user"]["created_at"])
    assert_no_secret(response, user.password)


# -------------------------------------------------------------------------- issued token claims


@pytest.mark.parametrize("route", ["register", "login", "token"])
def test_issued_tokens_carry_the_documented_claims(client: TestClient, route: str) -> None:
    email = unique_email("claims")
    registered = register(client, email=email, name="Claimed Name")
    assert registered.status_code == 201
    user_id = registered.json()["user"]["id"]
    if route == "register":
        token = registered.json()["access_token"]
    elif route == "login":
        token = login(client, email, PASSWORD).json()["access_token"]
    else:
        token = client.post(TOKEN, data={"username": email, "password": PASSWORD}).json()["access_token"]

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(
        token,
        TEST_SECRET,
        algorithms=["HS256"],
        issuer=ISSUER,
        options={"require": ["sub", "iat", "exp", "iss"]},
    )
    assert set(claims) == {"sub", "sid", "iat", "exp", "iss", "email", "name"}
    assert claims["sub"] == user_id
    assert claims["iss"] == ISSUER
    assert claims["email"] == email
    assert claims["name"] == "Claimed Name"
    assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] == EXPIRES_IN


# ------------------------------------------------------------------------------- token failures

HeaderBuilder = Callable[[RegisteredUser], dict[str, str]]


def _with_claims(**changes: Any) -> HeaderBuilder:
    """The user's own valid token, re-signed correctly after changing (None = removing) some claims."""

    def build(user: RegisteredUser) -> dict[str, str]:
        claims = claims_of(user.token)
        for key, value in changes.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return bearer(sign(claims))

    return build


def _resigned(*, key: Any = TEST_SECRET, algorithm: str) -> HeaderBuilder:
    return lambda user: bearer(sign(claims_of(user.token), key=key, algorithm=algorithm))


def _rs256(user: RegisteredUser) -> dict[str, str]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return bearer(sign(claims_of(user.token), key=private_key, algorithm="RS256"))


def _alg_none(alg: str, keep_signature: bool = False) -> HeaderBuilder:
    def build(user: RegisteredUser) -> dict[str, str]:
        token = unsigned_token(claims_of(user.token), alg)
        if keep_signature:
            token += user.token.rsplit(".", 1)[1]
        return bearer(token)

    return build


def _tampered_payload(user: RegisteredUser) -> dict[str, str]:
    header, _, signature = user.token.split(".")
    claims = claims_of(user.token) | {"name": "Mallory"}
    return bearer(f"{header}.{b64url_json(claims)}.{signature}")


def _now() -> int:
    return int(time.time())


NO_CREDENTIALS: dict[str, HeaderBuilder] = {
    "missing-header": lambda user: {},
    "basic-scheme": lambda user: {"Authorization": "Basic " + b64url(f"{user.email}:{user.password}".encode())},
    "bearer-without-token": lambda user: {"Authorization": "Bearer"},
    "bearer-empty-token": lambda user: {"Authorization": "Bearer "},
    "token-without-scheme": lambda user: {"Authorization": user.token},
    "other-scheme-with-valid-token": lambda user: {"Authorization": f"Token {user.token}"},
}

BAD_TOKENS: dict[str, HeaderBuilder] = {
    "malformed-two-parts": lambda user: bearer("abc.def"),
    "malformed-three-parts": lambda user: bearer("a.b.c"),
    "garbage": lambda user: bearer("not-a-jwt-at-all"),
    "garbage-bytes": lambda user: bearer("%%%.%%%.%%%"),
    "tampered-payload": _tampered_payload,
    "other-secret": _resigned(key="another-secret-that-is-also-32-characters-long", algorithm="HS256"),
    "alg-none": _alg_none("none"),
    "alg-None": _alg_none("None"),
    "alg-none-with-signature": _alg_none("none", keep_signature=True),
    "hs512-correct-secret": _resigned(algorithm="HS512"),
    "hs384-correct-secret": _resigned(algorithm="HS384"),
    "rs256": _rs256,
    "expired": _with_claims(iat=_now() - 7200, exp=_now() - 3600),
    "no-exp": _with_claims(exp=None),
    "exp-empty-string": _with_claims(exp=""),
    "exp-not-a-number": _with_claims(exp="tomorrow"),
    "no-sub": _with_claims(sub=None),
    "sub-empty": _with_claims(sub=""),
    "sub-blank": _with_claims(sub="   "),
    "sub-integer": _with_claims(sub=12345),
    "our-iss-unknown-user": _with_claims(sub=str(uuid.uuid4())),
    "not-yet-valid": _with_claims(nbf=_now() + 3600),
}


def test_control_valid_token_is_accepted(client: TestClient, users: UserFactory) -> None:
    """The builders below start from this token; it must work, so each failure is due to what they change."""
    user = users.create()

    assert me(client, user.headers).status_code == 200
    assert me(client, _with_claims()(user)).json()["id"] == user.id
    assert me(client, _resigned(algorithm="HS256")(user)).json()["id"] == user.id


@pytest.mark.parametrize("build", NO_CREDENTIALS.values(), ids=NO_CREDENTIALS.keys())
def test_requests_without_bearer_credentials_are_unauthorized(
    client: TestClient, users: UserFactory, build: HeaderBuilder
) -> None:
    user = users.create()

    response = me(client, build(user))

    assert_unauthorized(response)
    assert user.email not in response.text


@pytest.mark.parametrize("build", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_invalid_tokens_are_unauthorized_with_a_generic_body(
    client: TestClient, users: UserFactory, build: HeaderBuilder
) -> None:
    user = users.create()
    reference = assert_unauthorized(me(client, bearer("garbage")))

    response = me(client, build(user))

    # The same body for every reason, so a client cannot probe why its token failed.
    assert assert_unauthorized(response) == reference
    assert me(client, user.headers).status_code == 200


def test_token_of_deleted_user_is_rejected_and_not_recreated(
    client: TestClient, users: UserFactory, db_session: Session
) -> None:
    user = users.create()
    row = db_session.get(User, user.id)
    assert row is not None
    db_session.delete(row)
    db_session.commit()

    response = me(client, user.headers)

    assert_unauthorized(response)
    db_session.expire_all()
    assert db_session.get(User, user.id) is None


@pytest.mark.parametrize(
    "build",
    [
        lambda sub: better_auth_token(sub, email=unique_email("x"), expires_in=-60),
        lambda sub: better_auth_token(sub, email=unique_email("x"), secret="wrong-secret-wrong-secret-wrong-secret"),
        lambda sub: better_auth_token(sub, email=unique_email("x"), algorithm="HS512"),
        lambda sub: better_auth_token(sub, email=unique_email("x"), iss=ISSUER),
        lambda sub: unsigned_token({"sub": sub, "exp": _now() + 600, "email": unique_email("x")}),
    ],
    ids=["expired", "wrong-secret", "hs512", "our-iss", "alg-none"],
)
def test_invalid_better_auth_tokens_never_create_users(
    client: TestClient, db_session: Session, build: Callable[[str], str]
) -> None:
    sub = new_sub()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        token = build(sub)

    assert_unauthorized(me(client, bearer(token)))

    db_session.expire_all()
    assert db_session.get(User, sub) is None


# ------------------------------------------------------------------------------- Better Auth tokens


@pytest.mark.parametrize("iss", [None, "http://localhost:3000"], ids=["no-iss", "frontend-iss"])
def test_better_auth_token_creates_user_on_first_use(client: TestClient, db_session: Session, iss: str | None) -> None:
    sub = new_sub()
    email = unique_email("ba")
    token = better_auth_token(sub, email=email.upper(), name="Ada Lovelace", iss=iss)
    assert db_session.get(User, sub) is None

    first = me(client, bearer(token))
    second = me(client, bearer(token))

    assert first.status_code == 200, first.text
    body = first.json()
    assert body == {
        "id": sub,
        "email": email,
        "name": "Ada Lovelace",
        "created_at": body["created_at"],
        "notification_channels": ["email", "push"],
    }
    parse_aware(body["created_at"])
    assert second.status_code == 200, second.text
    assert second.json()["id"] == sub
    assert second.json()["email"] == email
    assert parse_aware(second.json()["created_at"]) == parse_aware(body["created_at"])
    row = db_session.get(User, sub)
    assert row is not None and row.password_hash is None and row.email == email


def test_better_auth_token_without_email(client: TestClient) -> None:
    first_sub, second_sub = new_sub(), new_sub()

    first = me(client, bearer(better_auth_token(first_sub, name="No Mail")))
    second = me(client, bearer(better_auth_token(second_sub, name="Also No Mail")))

    assert first.status_code == 200, first.text
    assert first.json() == {
        "id": first_sub,
        "email": None,
        "name": "No Mail",
        "created_at": first.json()["created_at"],
        "notification_channels": ["email", "push"],
    }
    assert second.status_code == 200, second.text
    assert second.json()["id"] == second_sub and second.json()["email"] is None


@pytest.mark.parametrize("variant", [lambda e: e, str.upper, lambda e: f"  {e} "], ids=["same", "upper", "spaces"])
def test_better_auth_token_with_email_of_another_account_is_refused(
    client: TestClient, users: UserFactory, db_session: Session, variant: Callable[[str], str]
) -> None:
    owner = users.create()
    sub = new_sub()

    response = me(client, bearer(better_auth_token(sub, email=variant(owner.email), name="Intruder")))

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "The email in this token belongs to another account"}
    db_session.expire_all()
    assert db_session.get(User, sub) is None
    owner_now = me(client, owner.headers).json()
    assert (owner_now["id"], owner_now["email"], owner_now["name"]) == (owner.id, owner.email, "Test User")
    assert login(client, owner.email, owner.password).json()["user"]["id"] == owner.id


def test_better_auth_user_profile_changes_are_applied(client: TestClient, db_session: Session) -> None:
    sub = new_sub()
    old_email, new_email = unique_email("old"), unique_email("new")
    created = me(client, bearer(better_auth_token(sub, email=old_email, name="Old Name")))
    assert created.status_code == 200, created.text

    updated = me(client, bearer(better_auth_token(sub, email=new_email.upper(), name="New Name")))

    assert updated.status_code == 200, updated.text
    assert updated.json() == {
        "id": sub,
        "email": new_email,
        "name": "New Name",
        "created_at": created.json()["created_at"],
        "notification_channels": ["email", "push"],
    }
    db_session.expire_all()
    row = db_session.get(User, sub)
    assert row is not None and row.email == new_email and row.name == "New Name"
    # The old address is free again.
    assert register(client, email=old_email).status_code == 201


def test_better_auth_user_cannot_take_another_accounts_email(client: TestClient, users: UserFactory) -> None:
    owner = users.create()
    sub = new_sub()
    own_email = unique_email("ba")
    assert me(client, bearer(better_auth_token(sub, email=own_email, name="BA"))).status_code == 200

    response = me(client, bearer(better_auth_token(sub, email=owner.email, name="BA")))

    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "The email in this token belongs to another account"}
    assert me(client, bearer(better_auth_token(sub, name="BA"))).json()["email"] == own_email
    assert login(client, owner.email, owner.password).status_code == 200


@pytest.mark.parametrize("aud", ["todo-frontend", ["todo-frontend", "todo-api"]], ids=["string", "list"])
def test_better_auth_token_with_audience_is_accepted(client: TestClient, aud: str | list[str]) -> None:
    sub = new_sub()
    email = unique_email("aud")

    response = me(client, bearer(better_auth_token(sub, email=email, name="Aud", aud=aud)))

    assert response.status_code == 200, response.text
    assert response.json()["id"] == sub
    assert response.json()["email"] == email


# ----------------------------------------------------------------------------------- concurrency

WORKERS = 8


def _race(live_server: LiveServer, send: Callable[[httpx.Client], Response]) -> list[Response]:
    barrier = threading.Barrier(WORKERS)

    def attempt(_: int) -> Response:
        with live_server.client() as http:
            barrier.wait(timeout=30)
            return send(http)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(attempt, range(WORKERS)))


@pytest.mark.parametrize("vary_case", [False, True], ids=["same-email", "case-and-space-variants"])
def test_concurrent_duplicate_registration_creates_one_user(live_server: LiveServer, vary_case: bool) -> None:
    email = unique_email("race")
    counter = iter(range(WORKERS))
    lock = threading.Lock()

    def send(http: httpx.Client) -> Response:
        with lock:
            index = next(counter)
        submitted = f"  {email.upper()} " if vary_case and index % 2 else email
        return http.post(REGISTER, json={"name": f"Racer {index}", "email": submitted, "password": PASSWORD})

    responses = _race(live_server, send)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (WORKERS - 1), [r.text for r in responses]
    winner = next(response.json() for response in responses if response.status_code == 201)
    assert winner["user"]["email"] == email
    for response in responses:
        if response.status_code == 409:
            assert response.json() == EMAIL_TAKEN
    with live_server.client() as http:
        logged_in = http.post(LOGIN, json={"email": email, "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["user"]["id"] == winner["user"]["id"]


def test_concurrent_first_use_of_better_auth_token_creates_one_user(live_server: LiveServer) -> None:
    sub = new_sub()
    email = unique_email("race-ba")
    token = better_auth_token(sub, email=email, name="Racer")

    responses = _race(live_server, lambda http: http.get(ME, headers=bearer(token)))

    assert [response.status_code for response in responses] == [200] * WORKERS, [r.text for r in responses]
    assert {response.json()["id"] for response in responses} == {sub}
    assert {response.json()["email"] for response in responses} == {email}
    assert len({response.json()["created_at"] for response in responses}) == 1
