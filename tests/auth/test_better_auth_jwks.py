"""Better Auth jwt-plugin tokens: verified against the frontend's JWKS, served by a real HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.auth.better_auth_frontend import (
    ALGORITHMS,
    DROP,
    AppFactory,
    FrontendUser,
    JWKSServer,
    SigningKey,
    me,
    new_key,
    plugin_payload,
    sign,
)
from tests.conftest import LiveServer, make_settings
from tests.factories import TEST_SECRET, UserFactory, bearer, better_auth_token, unique_email
from tests.tasks.helpers import Actor, assert_not_found, create_task, list_tasks, tasks_url
from todo_api.main import create_app

UNAUTHORIZED = {"detail": "Could not validate credentials"}


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    """One key pair per algorithm (RSA generation is slow: made once per module)."""
    return {alg: new_key(alg) for alg in ALGORITHMS}


@pytest.fixture
def jwks_server(keys: dict[str, SigningKey]) -> Iterator[JWKSServer]:
    server = JWKSServer([keys["EdDSA"]])
    yield server
    server.stop()


@pytest.fixture
def apps(database_url: str, db_session: Session) -> Iterator[AppFactory]:
    with AppFactory(database_url, db_session) as factory:
        yield factory


@pytest.fixture
def client(apps: AppFactory, jwks_server: JWKSServer) -> TestClient:
    """The app of a service whose frontend is `jwks_server` (BETTER_AUTH_URL set, nothing else)."""
    return apps.client(BETTER_AUTH_URL=jwks_server.url)


def token_for(server: JWKSServer, key: SigningKey, user: FrontendUser | None = None, **overrides: Any) -> str:
    """A token as that frontend's `GET /api/auth/token` answers it (iss and aud: the frontend's origin)."""
    claims: dict[str, Any] = {"iss": server.url, "aud": server.url, **overrides}
    payload = plugin_payload(user or FrontendUser(), **claims)
    return sign(payload, key)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == UNAUTHORIZED
    assert response.headers["www-authenticate"] == "Bearer"


def hmac_signed(header: dict[str, Any], payload: dict[str, Any], secret: str) -> str:
    """A JWT whose header says whatever `header` says, signed with HMAC-SHA256 by hand."""

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


# --- every algorithm the plugin signs with ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_each_algorithm_is_accepted(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey], alg: str
) -> None:
    jwks_server.keys = [keys[alg]]
    client = apps.client(BETTER_AUTH_URL=jwks_server.url)
    user = FrontendUser(name="Ada Lovelace", email=unique_email("Ada").upper())

    response = me(client, token_for(jwks_server, keys[alg], user))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["email"], body["name"]) == (user.id, user.email.lower(), "Ada Lovelace")
    assert jwks_server.fetches == 1


def test_several_live_keys_all_work(client: TestClient, jwks_server: JWKSServer, keys: dict[str, Any]) -> None:
    jwks_server.keys = [keys["EdDSA"], keys["ES256"], keys["RS256"]]
    for alg in ("EdDSA", "ES256", "RS256"):
        assert me(client, token_for(jwks_server, keys[alg])).status_code == 200
    assert jwks_server.fetches == 1


def test_a_jwks_user_gets_every_task_route_and_isolation(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    first, second = FrontendUser(), FrontendUser()
    alice = Actor(id=first.id, headers=bearer(token_for(jwks_server, keys["EdDSA"], first)))
    bob = Actor(id=second.id, headers=bearer(token_for(jwks_server, keys["EdDSA"], second)))

    task = create_task(client, alice, title="Buy milk", priority="high")
    assert task["user_id"] == alice.id
    url = tasks_url(alice.id, task["id"])
    assert client.get(url, headers=alice.headers).json()["title"] == "Buy milk"
    assert client.put(url, headers=alice.headers, json={"title": "Buy oat milk"}).status_code == 200
    assert client.patch(url, headers=alice.headers, json={"category": "errands"}).status_code == 200
    completed = client.patch(tasks_url("me", task["id"], complete=True), headers=alice.headers)
    assert completed.status_code == 200 and completed.json()["status"] == "completed"
    assert [t["title"] for t in list_tasks(client, alice)] == ["Buy oat milk"]

    # Bob, another Better Auth user, cannot see or touch it: the same 404 as a missing task.
    assert_not_found(client.get(url, headers=bob.headers))
    assert_not_found(client.get(tasks_url(alice.id), headers=bob.headers))
    assert_not_found(client.delete(tasks_url(bob.id, task["id"]), headers=bob.headers))
    assert list_tasks(client, bob) == []

    assert client.delete(url, headers=alice.headers).status_code == 204
    assert list_tasks(client, alice) == []


def test_jwks_and_shared_secret_tokens_reach_the_same_user(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    user = FrontendUser()
    via_jwks = Actor(id=user.id, headers=bearer(token_for(jwks_server, keys["EdDSA"], user)))
    via_secret = Actor(id=user.id, headers=bearer(better_auth_token(user.id, email=user.email, name=user.name)))

    task = create_task(client, via_jwks, title="Shared")

    assert [t["id"] for t in list_tasks(client, via_secret)] == [task["id"]]


def test_name_and_email_follow_the_token(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    user = FrontendUser(name="Before")
    assert me(client, token_for(jwks_server, keys["EdDSA"], user)).json()["name"] == "Before"
    user.name, user.email = "After", unique_email("renamed")

    body = me(client, token_for(jwks_server, keys["EdDSA"], user)).json()

    assert (body["id"], body["name"], body["email"]) == (user.id, "After", user.email)


def test_email_of_another_account_is_refused(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    local = UserFactory(client).create()
    intruder = FrontendUser(email=local.email)

    response = me(client, token_for(jwks_server, keys["EdDSA"], intruder))

    assert response.status_code == 401
    assert response.json() == {"detail": "The email in this token belongs to another account"}
    assert me(client, local.token).json()["id"] == local.id


# --- fetching: rotation, floods, an endpoint that is down -----------------------------------------------


def test_rotation_is_picked_up_without_a_restart(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, jwks_options={"min_refetch_interval": 0})
    old, new = keys["EdDSA"], new_key("EdDSA")
    assert me(client, token_for(jwks_server, old)).status_code == 200

    jwks_server.keys = [new]  # the frontend rotates and retires the old key
    assert me(client, token_for(jwks_server, new)).status_code == 200  # unknown kid: refetched

    assert jwks_server.fetches == 2
    assert_unauthorized(me(client, token_for(jwks_server, old)))


def test_keys_are_refreshed_when_the_cache_expires(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, jwks_options={"ttl": 0, "min_refetch_interval": 0})
    token = token_for(jwks_server, keys["EdDSA"])
    assert me(client, token).status_code == 200

    jwks_server.keys = [keys["ES256"]]  # the known key is revoked; a stale cache notices

    assert_unauthorized(me(client, token))
    assert jwks_server.fetches == 2


def test_unknown_kid_flood_fetches_once(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    forger = new_key("EdDSA")
    for _ in range(30):
        forged = token_for(
            jwks_server, SigningKey(kid=secrets.token_hex(8), alg="EdDSA", private_key=forger.private_key)
        )
        assert_unauthorized(me(client, forged))

    assert jwks_server.fetches == 1  # the cold start's fetch, then nothing for 10 seconds
    assert me(client, token_for(jwks_server, keys["EdDSA"])).status_code == 200
    assert jwks_server.fetches == 1


def test_concurrent_unknown_kid_flood_fetches_once(database_url: str, jwks_server: JWKSServer) -> None:
    """A cold start under a concurrent flood of made-up kids: the lock lets exactly one fetch through."""
    forger = new_key("ES256")
    settings = make_settings(database_url, BETTER_AUTH_URL=jwks_server.url)
    tokens = [
        token_for(jwks_server, SigningKey(kid=secrets.token_hex(8), alg="ES256", private_key=forger.private_key))
        for _ in range(64)
    ]
    with LiveServer(create_app(settings)) as server, server.client() as http, ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda token: http.get("/api/auth/me", headers=bearer(token)).status_code, tokens))

    assert statuses == [401] * len(tokens)
    assert jwks_server.fetches == 1


def test_the_refetch_interval_is_what_limits_fetches(apps: AppFactory, jwks_server: JWKSServer) -> None:
    # The interval is long enough for five requests on a slow, shared machine (0.2 s was not, once).
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, jwks_options={"min_refetch_interval": 1.0})
    unknown = token_for(jwks_server, new_key("EdDSA"))
    for _ in range(5):
        assert_unauthorized(me(client, unknown))
    assert jwks_server.fetches == 1

    time.sleep(1.1)
    assert_unauthorized(me(client, unknown))
    assert_unauthorized(me(client, unknown))
    assert jwks_server.fetches == 2


def test_known_keys_keep_working_while_the_jwks_server_is_down(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    # Past its TTL and free to refetch at every request: still the last keys serve while nothing answers.
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, jwks_options={"ttl": 0, "min_refetch_interval": 0})
    known = token_for(jwks_server, keys["EdDSA"])
    assert me(client, known).status_code == 200

    jwks_server.stop()

    assert me(client, known).status_code == 200
    assert_unauthorized(me(client, token_for(jwks_server, new_key("EdDSA"))))
    assert me(client, known).status_code == 200


def test_a_jwks_server_that_never_answered_gives_401(apps: AppFactory, keys: dict[str, SigningKey]) -> None:
    server = JWKSServer([keys["EdDSA"]])
    server.stop()
    client = apps.client(BETTER_AUTH_URL=server.url)

    assert_unauthorized(me(client, token_for(server, keys["EdDSA"])))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (200, b"<html>not json</html>"),
        (200, b'{"keys": "not a list"}'),
        (200, b'{"no": "keys"}'),
        (200, b"[]"),
        (302, b""),
    ],
    ids=["http-500", "not-json", "keys-not-a-list", "no-keys", "not-an-object", "redirect"],
)
def test_a_broken_jwks_answer_keeps_the_last_keys(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey], status: int, body: bytes | None
) -> None:
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, jwks_options={"ttl": 0, "min_refetch_interval": 0})
    known = token_for(jwks_server, keys["EdDSA"])
    assert me(client, known).status_code == 200

    jwks_server.status, jwks_server.body = status, body

    assert me(client, known).status_code == 200
    assert_unauthorized(me(client, token_for(jwks_server, keys["ES256"])))
    assert jwks_server.fetches == 3


def test_a_hanging_jwks_server_times_out_into_a_401(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    jwks_server.delay = 5
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, jwks_options={"timeout": 0.2})

    assert_unauthorized(me(client, token_for(jwks_server, keys["EdDSA"])))


def test_unusable_keys_in_the_jwks_are_skipped(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    jwks_server.raw_keys = [
        {"kid": "no-alg", "kty": "OKP", "crv": "Ed25519", "x": "AA"},
        {"kid": "no-x", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519"},
        {"kid": "bad-x", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519", "x": "!!"},
        {"kid": "no-n", "alg": "RS256", "kty": "RSA", "e": "AQAB"},
        {"kid": "wrong-kty", "alg": "ES256", "kty": "OKP", "crv": "Ed25519", "x": keys["EdDSA"].jwk["x"]},
        {"kid": "oct", "alg": "HS256", "kty": "oct", "k": "c2VjcmV0"},
        {"alg": "EdDSA", "kty": "OKP", "crv": "Ed25519", "x": keys["EdDSA"].jwk["x"]},
        "not an object",
    ]
    same_key_without_alg = SigningKey(kid="no-alg", alg="EdDSA", private_key=keys["EdDSA"].private_key)

    assert me(client, token_for(jwks_server, keys["EdDSA"])).status_code == 200
    assert_unauthorized(me(client, token_for(jwks_server, same_key_without_alg)))


# --- claims: issuer, audience, expiry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "https://evil.example"},
        {"aud": "https://evil.example"},
        {"aud": ["https://evil.example", "https://other.example"]},
        {"iss": DROP},
        {"aud": DROP},
        {"exp": DROP},
        {"sub": DROP},
        {"sub": ""},
        {"sub": 42},
        {"exp": "120 seconds ago"},
        {"nbf": "in 120 seconds"},
    ],
    ids=[
        "wrong-iss",
        "wrong-aud",
        "wrong-aud-list",
        "no-iss",
        "no-aud",
        "no-exp",
        "no-sub",
        "empty-sub",
        "number-sub",
        "expired-beyond-leeway",
        "not-yet-valid",
    ],
)
def test_bad_claims_are_refused(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey], overrides: dict[str, Any]
) -> None:
    now = int(time.time())
    relative = {"120 seconds ago": now - 120, "in 120 seconds": now + 120}
    claims = {
        name: relative.get(value, value) if isinstance(value, str) else value for name, value in overrides.items()
    }
    assert_unauthorized(me(client, token_for(jwks_server, keys["EdDSA"], None, **claims)))


def test_an_audience_list_containing_ours_is_accepted(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    token = token_for(jwks_server, keys["EdDSA"], aud=["https://api.example", jwks_server.url])
    assert me(client, token).status_code == 200


def test_configured_issuers_and_audiences(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    client = apps.client(
        BETTER_AUTH_JWKS_URL=jwks_server.jwks_url,
        BETTER_AUTH_ISSUER=" https://auth.example , https://old-auth.example ",
        BETTER_AUTH_AUDIENCE="https://api.example",
    )
    for issuer in ("https://auth.example", "https://old-auth.example"):
        token = token_for(jwks_server, keys["EdDSA"], iss=issuer, aud="https://api.example")
        assert me(client, token).status_code == 200
    # The frontend's origin is no longer what counts once issuer and audience are configured.
    assert_unauthorized(me(client, token_for(jwks_server, keys["EdDSA"])))


def test_expiry_within_the_leeway_is_accepted(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    now = int(time.time())
    assert me(client, token_for(jwks_server, keys["EdDSA"], exp=now - 5)).status_code == 200
    assert me(client, token_for(jwks_server, keys["EdDSA"], nbf=now + 5)).status_code == 200


def test_leeway_zero_applies_to_every_token_kind(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, JWT_LEEWAY=0)
    now = int(time.time())
    assert_unauthorized(me(client, token_for(jwks_server, keys["EdDSA"], exp=now - 5)))
    assert_unauthorized(me(client, better_auth_token(expires_in=-5)))


def test_shared_secret_tokens_get_the_leeway_too(client: TestClient) -> None:
    assert me(client, better_auth_token(expires_in=-5, email=unique_email())).status_code == 200
    assert_unauthorized(me(client, better_auth_token(expires_in=-120, email=unique_email())))


# --- no algorithm confusion, no keys from the token ---------------------------------------------------


def test_an_hs256_token_with_a_jwks_kid_is_judged_by_the_secret_alone(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    kid = keys["EdDSA"].kid
    sub = f"ba_{secrets.token_hex(8)}"
    good = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, TEST_SECRET, "HS256", headers={"kid": kid})
    forged = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, "x" * 32, "HS256", headers={"kid": kid})

    assert me(client, good).json()["id"] == sub
    assert_unauthorized(me(client, forged))
    assert jwks_server.fetches == 0  # never looked at the JWKS


def test_an_asymmetric_token_re_signed_with_the_secret_is_refused(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    payload = plugin_payload(FrontendUser(), iss=jwks_server.url, aud=jwks_server.url)
    for alg in ALGORITHMS:
        assert_unauthorized(me(client, hmac_signed({"alg": alg, "kid": keys["EdDSA"].kid}, payload, TEST_SECRET)))


def test_hs256_keyed_with_the_public_key_is_refused(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    """The classic confusion: HMAC keyed with the (public) JWK material the server would verify with."""
    jwks_server.keys = [keys["RS256"]]
    payload = plugin_payload(FrontendUser(), iss=jwks_server.url, aud=jwks_server.url)
    for secret in (json.dumps(keys["RS256"].jwk), keys["RS256"].jwk["n"]):
        assert_unauthorized(me(client, hmac_signed({"alg": "HS256", "kid": keys["RS256"].kid}, payload, secret)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "", "HS512", "ES384", "RS512"])
def test_algorithms_outside_the_list_are_refused(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey], alg: str
) -> None:
    payload = plugin_payload(FrontendUser(), iss=jwks_server.url, aud=jwks_server.url)

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{segment({'alg': alg, 'kid': keys['EdDSA'].kid})}.{segment(payload)}."
    assert_unauthorized(me(client, unsigned))


def test_the_token_alg_must_be_the_key_alg(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    jwks_server.keys = [keys["RS256"]]
    as_pss = SigningKey(kid=keys["RS256"].kid, alg="PS256", private_key=keys["RS256"].private_key)

    assert me(client, token_for(jwks_server, keys["RS256"])).status_code == 200
    assert_unauthorized(me(client, token_for(jwks_server, as_pss)))


def test_algorithms_can_be_restricted(apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]) -> None:
    jwks_server.keys = [keys["EdDSA"], keys["RS256"]]
    client = apps.client(BETTER_AUTH_URL=jwks_server.url, BETTER_AUTH_ALGORITHMS="EdDSA")

    assert me(client, token_for(jwks_server, keys["EdDSA"])).status_code == 200
    assert_unauthorized(me(client, token_for(jwks_server, keys["RS256"])))


def test_a_token_without_kid_is_refused(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    payload = plugin_payload(FrontendUser(), iss=jwks_server.url, aud=jwks_server.url)
    no_kid = jwt.encode(payload, keys["EdDSA"].private_key, algorithm="EdDSA", headers={"typ": None})
    empty_kid = sign(payload, keys["EdDSA"], kid="")

    assert_unauthorized(me(client, no_kid))
    assert_unauthorized(me(client, empty_kid))
    assert jwks_server.fetches == 0


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk"])
def test_keys_named_by_the_token_are_never_used(client: TestClient, jwks_server: JWKSServer, header: str) -> None:
    attacker_key = new_key("EdDSA")
    attacker = JWKSServer([attacker_key])
    try:
        value = attacker_key.jwk if header == "jwk" else attacker.jwks_url
        forged = sign(
            plugin_payload(FrontendUser(), iss=jwks_server.url, aud=jwks_server.url),
            attacker_key,
            **{header: value},
        )

        assert_unauthorized(me(client, forged))
        assert attacker.fetches == 0
    finally:
        attacker.stop()


def test_short_rsa_keys_are_refused(client: TestClient, jwks_server: JWKSServer) -> None:
    weak = SigningKey(kid="weak", alg="RS256", private_key=rsa.generate_private_key(65537, key_size=1024))
    jwks_server.keys = [weak]
    with pytest.warns(jwt.InsecureKeyLengthWarning):  # PyJWT signs with it, grudgingly
        token = token_for(jwks_server, weak)

    assert_unauthorized(me(client, token))


def test_a_key_the_frontend_never_listed_cannot_sign_for_a_listed_kid(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    impostor = SigningKey(kid=keys["EdDSA"].kid, alg="EdDSA", private_key=new_key("EdDSA").private_key)
    assert_unauthorized(me(client, token_for(jwks_server, impostor)))


def test_asymmetric_tokens_are_refused_without_a_jwks(
    apps: AppFactory, jwks_server: JWKSServer, keys: dict[str, SigningKey]
) -> None:
    client = apps.client()
    assert_unauthorized(me(client, token_for(jwks_server, keys["EdDSA"])))
    assert jwks_server.fetches == 0


@pytest.mark.parametrize("token", ["a.b.c", "e30.e30.", "not-a-jwt", "a.b", "x" * 32])
def test_garbage_is_refused(client: TestClient, token: str) -> None:
    assert_unauthorized(me(client, token))


# --- revocation here applies to JWKS tokens too ------------------------------------------------------------


def test_logout_refuses_that_jwks_token(client: TestClient, jwks_server: JWKSServer, keys: dict[str, Any]) -> None:
    user = FrontendUser()
    token = token_for(jwks_server, keys["EdDSA"], user)
    other = token_for(jwks_server, keys["EdDSA"], user, iat=int(time.time()) - 1)
    assert me(client, token).status_code == 200

    assert client.post("/api/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204

    assert_unauthorized(me(client, token))
    assert me(client, other).status_code == 200


def test_logout_all_refuses_jwks_tokens_issued_before(
    client: TestClient, jwks_server: JWKSServer, keys: dict[str, Any]
) -> None:
    user = FrontendUser()
    before = token_for(jwks_server, keys["EdDSA"], user, iat=int(time.time()) - 5)
    assert me(client, before).status_code == 200

    assert client.post("/api/auth/logout-all", headers={"Authorization": f"Bearer {before}"}).status_code == 204

    assert_unauthorized(me(client, before))
