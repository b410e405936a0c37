"""Web Push (RFC 8030, 8291, 8292): the message encrypted by pywebpush, the VAPID header signed by py_vapid, and the
request sent by us, to an address we checked.

A subscription's endpoint is a URL the user gave us, which the server will POST to: a way to make it reach what only
it can reach (server-side request forgery). So an endpoint must be `https`, its host must resolve to public
addresses only (never loopback, private, link-local, the cloud metadata address or anything else not global), and
the connection goes to the very address that was checked (a name that resolves differently the second time cannot
move it): checked when the subscription is made, and again at every send. No redirect is followed, the response's
body is read to at most a few KB, and every step has PUSH_TIMEOUT. pywebpush's own senders (requests, aiohttp)
cannot be told which address to connect to, so the sending is ours. PUSH_ALLOW_PRIVATE_ENDPOINTS (tests, local
development; refused in production) lifts the address and `https` checks.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pywebpush import WebPusher

from todo_api.config import Settings

MAX_RESPONSE_BYTES = 4096
VAPID_LIFETIME = 12 * 3600  # the JWT's `exp` (RFC 8292: at most 24 hours)
VAPID_RENEW_BEFORE = 3600  # a cached header is signed again when it has less than this left


class EndpointRefused(ValueError):
    """The endpoint is not one the server may contact (the message says why, for the 422)."""


def load_vapid_key(value: str) -> Vapid:
    """VAPID_PRIVATE_KEY: PEM, or base64url of the raw 32-byte key or of its DER."""
    try:
        if value.lstrip().startswith("-----BEGIN"):
            return Vapid.from_pem(value.strip().encode())
        return Vapid.from_string(value.strip())
    except Exception:  # py_vapid raises several kinds; the key itself is never in the message
        raise ValueError(
            "VAPID_PRIVATE_KEY is not a P-256 private key (PEM, or base64url of the raw key or DER)"
        ) from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def application_server_key(vapid: Vapid) -> str:
    """The public key browsers take as `applicationServerKey`: base64url of the uncompressed P-256 point."""
    public: bytes = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64url(public)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    """Where a checked endpoint's request goes: its URL's parts and the address checked for it."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def check_endpoint(endpoint: str, *, allow_private: bool) -> Target:
    """The endpoint's target, resolved and checked (EndpointRefused when it may not be contacted)."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EndpointRefused("endpoint must be a valid URL") from None
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed_schemes or not parts.hostname:
        raise EndpointRefused("endpoint must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("endpoint must not carry credentials")
    host = parts.hostname
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise EndpointRefused("endpoint's host does not resolve") from None
    addresses = [str(info[4][0]) for info in found if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise EndpointRefused("endpoint's host does not resolve")
    if not allow_private and not all(_is_public(address) for address in addresses):
        raise EndpointRefused("endpoint must be a public address (not loopback, private, link-local or reserved)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the name resolves to now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS: the certificate is checked against the endpoint's host name (SNI too)."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class PushSubscriptionKeys:
    endpoint: str
    p256dh: str
    auth: str


class PushSender:
    """Sends one encrypted message to one subscription; thread-safe (the scheduler sends from several threads)."""

    def __init__(self, settings: Settings) -> None:
        self.vapid = load_vapid_key(settings.VAPID_PRIVATE_KEY)
        self.public_key = application_server_key(self.vapid)
        self.subject = settings.VAPID_SUBJECT
        self.timeout = settings.PUSH_TIMEOUT
        self.ttl = settings.PUSH_TTL
        self.allow_private = settings.PUSH_ALLOW_PRIVATE_ENDPOINTS
        self._tls = ssl.create_default_context()
        self._headers: dict[str, tuple[float, str]] = {}  # origin -> (expiry, Authorization header)
        self._lock = threading.Lock()

    def _authorization(self, origin: str) -> str:
        now = time.time()
        with self._lock:
            cached = self._headers.get(origin)
            if cached is not None and cached[0] - now > VAPID_RENEW_BEFORE:
                return cached[1]
        expiry = int(now) + VAPID_LIFETIME
        signed: dict[str, Any] = self.vapid.sign({"aud": origin, "exp": expiry, "sub": self.subject})
        header = str(signed["Authorization"])
        with self._lock:
            self._headers[origin] = (expiry, header)
        return header

    def send(self, subscription: PushSubscriptionKeys, payload: bytes) -> int:
        """POST `payload` to the subscription; returns the push service's status. Raises EndpointRefused (the
        endpoint may not be contacted now), OSError or http.client.HTTPException (no answer)."""
        target = check_endpoint(subscription.endpoint, allow_private=self.allow_private)
        info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        body: bytes = WebPusher(info).encode(payload, "aes128gcm")["body"]
        headers = {
            "Authorization": self._authorization(target.origin),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.ttl),
            "Urgency": "normal",
        }
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            connection = _PinnedHTTPSConnection(target, self.timeout, self._tls)
        else:
            connection = _PinnedHTTPConnection(target, self.timeout)
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)  # redirects are answers like any other: never followed
            return response.status
        finally:
            connection.close()
