"""A browser's push subscription and a Web Push service stand-in on loopback, for the reminder tests.

`PushService` checks every message the way a browser vendor's push service does (RFC 8030, 8291, 8292): VAPID
authorization, the encryption headers, the TTL; then it decrypts the body with the subscriber's keys, as the browser
would, and keeps the JSON payload. Whatever it refuses is also written to `errors`, which tests assert empty.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

import http_ece  # type: ignore[import-untyped, unused-ignore]
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_BODY = 4096  # RFC 8291: push services must accept this much; the big ones refuse more (413)
MAX_VAPID_LIFETIME = 24 * 60 * 60  # RFC 8292: `exp` at most 24 hours ahead
URGENCIES = frozenset({"very-low", "low", "normal", "high"})  # RFC 8030 section 5.3
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")  # RFC 8030 section 5.4
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_PATH = re.compile(r"/push/([^/?#]+)")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as the Push API writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url, padded or not; raises ValueError on anything else."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc


def public_key_from_b64(text: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from its base64url uncompressed point (65 bytes); ValueError if it is not one."""
    raw = b64url_decode(text)
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError(f"not an uncompressed P-256 point ({len(raw)} bytes)")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


class BrowserSubscription:
    """What a browser makes for `PushManager.subscribe()`: a P-256 key pair and a 16-byte auth secret."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = os.urandom(16)
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.p256dh = b64url_encode(raw)
        self.auth = b64url_encode(self.auth_secret)

    def subscription(self, endpoint: str) -> dict[str, Any]:
        """`PushSubscription.toJSON()` for this endpoint."""
        return {"endpoint": endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def decrypt(self, body: bytes) -> bytes:
        """The plaintext of an RFC 8291 `aes128gcm` body; raises if it was not encrypted for this subscription."""
        plaintext: bytes = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth_secret, version="aes128gcm"
        )
        return plaintext


@dataclass(frozen=True)
class Received:
    """One push message the service accepted (answered 2xx). Header names are lower case."""

    name: str
    headers: dict[str, str]
    claims: dict[str, Any]
    payload: Any
    ttl: int


class Refused(Exception):
    """A message the push service refuses: the HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PushService:
    """A Web Push service on 127.0.0.1 (a context manager) that checks, decrypts and records every message.

    `register(name, browser)` creates the endpoint `endpoint(name)`; `respond[name]` sets its answer to a valid
    message (201 by default; only 2xx answers are recorded in `received`); `vapid_public_key`, when set, is the only
    application server key accepted. `attempts[name]` counts every POST; `errors` lists every refusal.
    """

    def __init__(self, vapid_public_key: str | None = None) -> None:
        self.vapid_public_key = vapid_public_key
        self.respond: dict[str, int] = {}
        self.received: list[Received] = []
        self.errors: list[str] = []
        self.attempts: Counter[str] = Counter()
        self._browsers: dict[str, BrowserSubscription] = {}
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._changed = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PushService:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        with self._changed:
            connections = list(self._connections)
        for connection in connections:  # ends kept-alive connections, and with them their threads
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        thread.join(timeout=10)
        self._server = self._thread = None

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`: the `aud` every VAPID token must name."""
        if self._server is None:
            raise RuntimeError("PushService is not running: use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def endpoint(self, name: str) -> str:
        """The push resource URL of subscription `name`."""
        return f"{self.origin}/push/{name}"

    def register(self, name: str, browser: BrowserSubscription) -> None:
        """Makes `name` a live endpoint whose messages `browser`'s keys decrypt."""
        with self._changed:
            self._browsers[name] = browser

    def subscribe(self, name: str) -> dict[str, Any]:
        """A new browser subscription registered as `name`: its `PushSubscription.toJSON()`."""
        browser = BrowserSubscription()
        self.register(name, browser)
        return browser.subscription(self.endpoint(name))

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """The received messages once there are at least `count`; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"push service: expected {count} message(s) within {timeout} s, received "
                        f"{len(self.received)}; attempts {dict(self.attempts)}; errors {self.errors}"
                    )
                self._changed.wait(left)
            return list(self.received)

    def handle(self, name: str | None, headers: dict[str, str], body: bytes) -> int:
        """Checks one POST and answers its status; records it in `received` or `errors`."""
        label = name if name is not None else "?"
        with self._changed:
            self.attempts[label] += 1
            browser = self._browsers.get(name) if name is not None else None
        if browser is None:
            return 404
        try:
            claims = self._check_vapid(headers.get("authorization"))
            ttl = _check_headers(headers)
            if len(body) > MAX_BODY:
                raise Refused(413, f"body of {len(body)} bytes, more than {MAX_BODY}")
            if not body:
                raise Refused(400, "empty body: a reminder must carry its payload")
            try:
                plaintext = browser.decrypt(body)
            except Exception as exc:
                raise Refused(400, f"body does not decrypt with the subscription's keys: {exc!r}") from exc
            try:
                payload = json.loads(plaintext.decode("utf-8"))
            except ValueError as exc:
                raise Refused(400, f"payload is not UTF-8 JSON: {plaintext[:80]!r}") from exc
        except Refused as refused:
            self.error(f"POST /push/{label}: {refused.status} {refused.reason}")
            return refused.status
        status = self.respond.get(label, 201)
        if 200 <= status < 300:
            with self._changed:
                self.received.append(Received(label, headers, claims, payload, ttl))
                self._changed.notify_all()
        return status

    def error(self, text: str) -> None:
        """Adds `text` to `errors`."""
        with self._changed:
            self.errors.append(text)
            self._changed.notify_all()

    def _check_vapid(self, authorization: str | None) -> dict[str, Any]:
        if authorization is None:
            raise Refused(401, "no Authorization header")
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() != "vapid":
            raise Refused(401, f"Authorization scheme is {scheme!r}, not 'vapid'")
        params: dict[str, str] = {}
        for part in re.split(r"[\s,]+", rest.strip()):
            if not part:
                continue
            key, eq, value = part.partition("=")
            key = key.lower()
            if not eq or not value or key in params:
                raise Refused(401, f"malformed Authorization parameter {part[:40]!r}")
            params[key] = value.strip('"')
        if "t" not in params or "k" not in params:
            raise Refused(401, f"Authorization lacks t= or k= (has {sorted(params)})")
        token, k = params["t"], params["k"]
        try:
            public_key = self._public_key(k)
        except ValueError as exc:
            raise Refused(401, f"k= is not a P-256 public key: {exc}") from exc
        if self.vapid_public_key is not None and b64url_decode(k) != b64url_decode(self.vapid_public_key):
            raise Refused(403, f"k= {k} is not the application server key {self.vapid_public_key}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=public_key,
                algorithms=["ES256"],
                options={"require": ["aud", "exp", "sub"], "verify_aud": False, "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Refused(401, f"VAPID token rejected: {exc}") from exc
        origin = self.origin
        if claims["aud"] != origin:
            raise Refused(401, f"VAPID aud {claims['aud']!r} is not the endpoint's origin {origin!r}")
        exp, now = claims["exp"], time.time()
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise Refused(401, f"VAPID exp {exp!r} is not a number")
        if exp <= now:
            raise Refused(401, f"VAPID token expired {now - exp:.0f} s ago")
        if exp > now + MAX_VAPID_LIFETIME:
            raise Refused(401, f"VAPID exp is {exp - now:.0f} s ahead, more than 24 h")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise Refused(401, f"VAPID sub {sub!r} is neither a mailto: nor an https: URL")
        return claims

    def _public_key(self, k: str) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(k)
        if key is None:
            key = self._keys[k] = public_key_from_b64(k)
        return key


def _check_headers(headers: dict[str, str]) -> int:
    """The TTL, once the encryption and delivery headers are as RFC 8030 and 8291 require."""
    encoding = headers.get("content-encoding")
    if encoding is None or encoding.strip().lower() != "aes128gcm":
        raise Refused(400, f"Content-Encoding is {encoding!r}, not 'aes128gcm'")
    ttl = headers.get("ttl")
    if ttl is None:
        raise Refused(400, "no TTL header")
    if not re.fullmatch(r"[0-9]+", ttl.strip()):
        raise Refused(400, f"TTL {ttl!r} is not a non-negative integer")
    urgency = headers.get("urgency")
    if urgency is not None and urgency.strip().lower() not in URGENCIES:
        raise Refused(400, f"Urgency {urgency!r} is not one of {sorted(URGENCIES)}")
    topic = headers.get("topic")
    if topic is not None and not _TOPIC.fullmatch(topic.strip()):
        raise Refused(400, f"Topic {topic!r} is not 1 to 32 base64url characters")
    return int(ttl)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections alive: a benchmark's thousands of messages stay cheap
    disable_nagle_algorithm = True
    timeout = 60  # an idle kept-alive connection ends after this

    def setup(self) -> None:
        super().setup()
        with self.service._changed:
            self.service._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.service._changed:
                self.service._connections.discard(self.connection)

    @property
    def service(self) -> PushService:
        return cast(_Server, self.server).service

    def do_POST(self) -> None:
        match = _PATH.fullmatch(self.path)
        length = self.headers.get("Content-Length")
        if length is None or not re.fullmatch(r"\s*[0-9]+\s*", length):
            self.service.error(f"POST {self.path}: 411 no valid Content-Length ({length!r})")
            self.close_connection = True
            self._answer(411)
            return
        if int(length) > 16 * MAX_BODY:
            self.service.error(f"POST {self.path}: 413 Content-Length {length}")
            self.close_connection = True
            self._answer(413)
            return
        body = self.rfile.read(int(length))
        headers = {key.lower(): value for key, value in self.headers.items()}
        self._answer(self.service.handle(match.group(1) if match else None, headers, body))

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of concurrent senders is not dropped (and retried a second later)

    def __init__(self, service: PushService) -> None:
        self.service = service
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's also asks the resolver for the host's name
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the sender went away, or went quiet on a kept-alive connection
        self.service.error(f"push service stand-in crashed: {traceback.format_exc()}")
