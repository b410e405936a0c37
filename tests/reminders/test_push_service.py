"""The test doubles themselves: the push service stand-in refuses what a real one refuses; the network guard holds."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid  # type: ignore[import-untyped, unused-ignore]
from pywebpush import WebPusher  # type: ignore[import-untyped, unused-ignore]

from tests import netguard
from tests.reminders.push_service import BrowserSubscription, PushService, b64url_encode

REMINDER = {"type": "reminder", "task_id": 7, "title": "Water the plants"}


@pytest.fixture
def vapid() -> Any:
    key = Vapid()
    key.generate_keys()
    return key


def vapid_key(vapid: Any) -> str:
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url_encode(raw)


@pytest.fixture
def push(vapid: Any) -> Iterator[PushService]:
    with PushService(vapid_public_key=vapid_key(vapid)) as service:
        yield service


def encrypt(subscription: dict[str, Any], payload: Any = REMINDER) -> bytes:
    body: bytes = WebPusher(subscription).encode(json.dumps(payload).encode(), "aes128gcm")["body"]
    return body


def post(push: PushService, name: str, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection(push.origin.removeprefix("http://"), timeout=5)
    try:
        connection.request("POST", f"/push/{name}", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def message(push: PushService, vapid: Any, **claims: Any) -> dict[str, str]:
    headers: dict[str, str] = vapid.sign({"aud": push.origin, "sub": "mailto:ops@todo.example", **claims})
    return {**headers, "Content-Encoding": "aes128gcm", "TTL": "60"}


def test_accepts_and_decrypts_a_message_made_by_pywebpush(push: PushService, vapid: Any) -> None:
    subscription = push.subscribe("alice")

    assert post(push, "alice", encrypt(subscription), message(push, vapid)) == 201

    [received] = push.wait_for(1)
    assert received.name == "alice"
    assert received.payload == REMINDER
    assert received.ttl == 60
    assert received.claims["aud"] == push.origin
    assert received.headers["content-encoding"] == "aes128gcm"
    assert push.errors == [] and push.attempts["alice"] == 1


def test_parses_authorization_parameters_spaced_and_quoted(push: PushService, vapid: Any) -> None:
    subscription = push.subscribe("alice")
    claims = {"aud": push.origin, "exp": int(time.time()) + 3600, "sub": "https://todo.example/contact"}
    token = jwt.encode(claims, vapid.private_key, algorithm="ES256")
    headers = {"Authorization": f'vapid t="{token}" ,  k={vapid_key(vapid)}', "Content-Encoding": "aes128gcm"}

    assert post(push, "alice", encrypt(subscription), {**headers, "TTL": "0", "Urgency": "high"}) == 201
    assert push.wait_for(1)[0].ttl == 0 and push.errors == []


def spoiled(kind: str, push: PushService, vapid: Any, subscription: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """A message, with one thing wrong: `kind`."""
    now = int(time.time())
    headers, body = message(push, vapid), encrypt(subscription)
    if kind == "wrong-aud":
        headers = message(push, vapid, aud="http://127.0.0.1:1")
    elif kind == "expired":
        headers = message(push, vapid, exp=now - 5)
    elif kind == "exp-too-far":
        headers = message(push, vapid, exp=now + 25 * 3600)
    elif kind == "negative-ttl":
        headers["TTL"] = "-1"
    elif kind == "aesgcm":
        headers["Content-Encoding"] = "aesgcm"
    elif kind == "bad-urgency":
        headers["Urgency"] = "urgent"
    elif kind == "not-vapid":
        headers["Authorization"] = "Bearer " + headers["Authorization"].removeprefix("vapid ")
    elif kind == "other-subscription":
        body = encrypt(BrowserSubscription().subscription(push.endpoint("alice")))
    elif kind == "not-json":
        body = WebPusher(subscription).encode(b"\xff not json", "aes128gcm")["body"]
    elif kind == "too-big":
        body = encrypt(subscription, {"title": "x" * 5000})
    elif kind == "empty-body":
        body = b""
    return headers, body


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("wrong-aud", 401, "aud"),
        ("expired", 401, "expired"),
        ("exp-too-far", 401, "24 h"),
        ("negative-ttl", 400, "TTL"),
        ("aesgcm", 400, "Content-Encoding"),
        ("bad-urgency", 400, "Urgency"),
        ("not-vapid", 401, "scheme"),
        ("other-subscription", 400, "decrypt"),
        ("not-json", 400, "JSON"),
        ("too-big", 413, "bytes"),
        ("empty-body", 400, "empty"),
    ],
)
def test_refuses_what_a_real_push_service_refuses(
    push: PushService, vapid: Any, kind: str, status: int, reason: str
) -> None:
    headers, body = spoiled(kind, push, vapid, push.subscribe("alice"))

    assert post(push, "alice", body, headers) == status

    assert push.received == [] and push.attempts["alice"] == 1
    assert len(push.errors) == 1 and reason in push.errors[0], push.errors


def test_refuses_a_missing_ttl(push: PushService, vapid: Any) -> None:
    subscription = push.subscribe("alice")
    headers = {key: value for key, value in message(push, vapid).items() if key != "TTL"}

    assert post(push, "alice", encrypt(subscription), headers) == 400
    assert push.received == [] and "no TTL" in push.errors[0]


def test_refuses_a_token_of_another_application_server(push: PushService) -> None:
    subscription = push.subscribe("alice")
    stranger = Vapid()
    stranger.generate_keys()

    assert post(push, "alice", encrypt(subscription), message(push, stranger)) == 403
    assert push.received == [] and "application server key" in push.errors[0]


def test_refuses_a_forged_signature(push: PushService, vapid: Any) -> None:
    subscription = push.subscribe("alice")
    headers = message(push, vapid)
    token, _, key = headers["Authorization"].removeprefix("vapid t=").partition(",k=")
    header, _, signature = token.split(".")
    claims = {**jwt.decode(token, options={"verify_signature": False}), "sub": "mailto:x@evil.example"}
    forged = f"{header}.{b64url_encode(json.dumps(claims).encode())}.{signature}"
    headers["Authorization"] = f"vapid t={forged},k={key}"

    assert post(push, "alice", encrypt(subscription), headers) == 401
    assert push.received == [] and "VAPID token rejected" in push.errors[0]


def test_answers_the_status_it_is_told_and_records_only_2xx(push: PushService, vapid: Any) -> None:
    gone = push.subscribe("gone")
    push.respond["gone"] = 410

    assert post(push, "gone", encrypt(gone), message(push, vapid)) == 410
    assert post(push, "nobody", encrypt(gone), message(push, vapid)) == 404
    assert push.received == [] and push.errors == []
    assert push.attempts == {"gone": 1, "nobody": 1}


def test_wait_for_fails_clearly(push: PushService) -> None:
    with pytest.raises(AssertionError, match="expected 1 message"):
        push.wait_for(1, timeout=0.05)


# The network guard.


@pytest.fixture
def guard() -> Iterator[None]:
    """The guard in place; the attempts these tests make on purpose are forgotten afterwards."""
    netguard.install()
    before = len(netguard.attempts)
    try:
        yield
    finally:
        del netguard.attempts[before:]


@pytest.mark.usefixtures("guard")
@pytest.mark.parametrize("ip", ["10.0.0.1", "169.254.169.254", "8.8.8.8"])
def test_a_connection_beyond_loopback_fails_before_any_packet(ip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[object] = []
    for method in ("connect", "connect_ex"):  # the real methods: never called
        monkeypatch.setitem(netguard._original, method, lambda sock, address: reached.append(address))

    for connect in ("connect", "connect_ex"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.1)
            with pytest.raises(netguard.NonLoopbackConnection, match=ip):
                getattr(sock, connect)((ip, 443))
            assert sock.fileno() == -1  # closed, never connected
    with pytest.raises(netguard.NonLoopbackConnection):
        socket.create_connection((ip, 80), timeout=0.1)

    assert reached == []
    assert netguard.attempts[-3:] == [(ip, 443), (ip, 443), (ip, 80)]


@pytest.mark.usefixtures("guard")
def test_ipv6_and_host_names_beyond_loopback_fail() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.1)
        for ip in ("2001:4860:4860::8888", "::ffff:10.0.0.1"):
            with pytest.raises(netguard.NonLoopbackConnection):
                sock.connect((ip, 443))
    with socket.socket() as sock:
        sock.settimeout(0.1)
        with pytest.raises(netguard.NonLoopbackConnection, match="host name"):
            sock.connect(("example.com", 80))  # refused without asking DNS


@pytest.mark.usefixtures("guard")
def test_loopback_and_unix_connections_pass(tmp_path: Path) -> None:
    before = len(netguard.attempts)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with socket.create_connection((host, port), timeout=1):
                pass
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex(("127.0.0.1", port)) == 0
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen()
        client.connect(path)
    assert netguard.attempts[before:] == []


@pytest.mark.usefixtures("guard")
def test_uvloop_connections_are_guarded_too() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def connect(host: str, port: int) -> None:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
        writer.close()
        await writer.wait_closed()

    with socket.create_server(("127.0.0.1", 0)) as server:
        uvloop.run(connect("127.0.0.1", server.getsockname()[1]))
    with pytest.raises(netguard.NonLoopbackConnection, match="10.0.0.1"):
        uvloop.run(connect("10.0.0.1", 80))
    assert netguard.attempts[-1] == ("10.0.0.1", 80)


def test_the_stub_resolver_answers_from_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo("127.0.0.1", 80)
    stub = netguard.stub_resolver(monkeypatch, {"push.example": ["127.0.0.1", "::1"], "Evil.example.": ["10.1.2.3"]})

    assert socket.getaddrinfo("127.0.0.1", 80) == real
    assert [info[4] for info in socket.getaddrinfo("push.example", 443, type=socket.SOCK_STREAM)] == [
        ("127.0.0.1", 443),
        ("::1", 443, 0, 0),
    ]
    assert socket.getaddrinfo("PUSH.example", "443", socket.AF_INET6, socket.SOCK_STREAM) == [
        (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", 443, 0, 0))
    ]
    assert socket.getaddrinfo("evil.example", 80, socket.AF_INET, socket.SOCK_DGRAM)[0][4] == ("10.1.2.3", 80)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("todo.example", 443)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("evil.example", 443, socket.AF_INET6)
    assert stub.lookups[-2:] == ["todo.example", "evil.example"]


@pytest.mark.usefixtures("guard")
def test_the_guard_connects_to_what_the_stub_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    netguard.stub_resolver(monkeypatch, {"push.example": ["127.0.0.1"], "evil.example": ["10.1.2.3"]})
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("push.example", port), timeout=1):
            pass
        with socket.socket() as sock:
            sock.settimeout(1)
            sock.connect(("push.example", port))
            assert sock.getpeername() == ("127.0.0.1", port)
    with pytest.raises(netguard.NonLoopbackConnection, match="10.1.2.3"):
        socket.create_connection(("evil.example", 80), timeout=0.1)
    with pytest.raises(socket.gaierror):
        socket.create_connection(("todo.example", 80), timeout=0.1)


def test_the_guard_is_on_for_the_whole_suite() -> None:
    assert socket.socket.connect is netguard._guarded_connect  # installed by tests/conftest.py
