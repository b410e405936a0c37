"""Web Push (RFC 8030, 8291, 8292): the message encrypted by pywebpush, the VAPID header signed by py_vapid, and the
request sent by us, to an address we checked.

A subscription's endpoint is a URL the user gave us, which the server will POST to: a way to make it reach what only
it can reach (server-side request forgery). So an endpoint must be `https`, its host must resolve to public
addresses only (never loopback, private, link-local, the cloud metadata address or anything else not global), and
the connection goes to the very address that was checked (a name that resolves differently the second time cannot
move it): checked when the subscription is made, and again for every new connection. Sends go through aiohttp (the
client pywebpush itself uses) with a resolver that checks what it returns and no DNS cache; no redirect is followed,
the response's body is read to at most a few KB, and a send has PUSH_TIMEOUT in all. PUSH_ALLOW_PRIVATE_ENDPOINTS
(tests, local development; refused in production) lifts the address and `https` checks.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from pywebpush import WebPusher

from todo_api.config import Settings

MAX_RESPONSE_BYTES = 4096
VAPID_LIFETIME = 12 * 3600  # the JWT's `exp` (RFC 8292: at most 24 hours)
VAPID_RENEW_BEFORE = 3600  # a cached header is signed again when it has less than this left


PUBLIC_ONLY = "endpoint must be a public address (not loopback, private, link-local or reserved)"


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


def _origin(scheme: str, host: str, port: int) -> str:
    """The endpoint's origin: a VAPID JWT's `aud`."""
    default = 443 if scheme == "https" else 80
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


def _parse(endpoint: str, *, allow_private: bool) -> tuple[str, str, int]:
    """The endpoint's scheme, host and port, if it is a URL the server may POST to (EndpointRefused if not)."""
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
    return parts.scheme, parts.hostname, port


def _checked(addresses: list[str], *, allow_private: bool) -> list[str]:
    if not addresses:
        raise EndpointRefused("endpoint's host does not resolve")
    if not allow_private and not all(_is_public(address) for address in addresses):
        raise EndpointRefused(PUBLIC_ONLY)
    return addresses


def _addresses(infos: list[tuple[Any, ...]]) -> list[str]:
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def check_endpoint(endpoint: str, *, allow_private: bool) -> None:
    """The endpoint resolved and checked: EndpointRefused when it may not be contacted."""
    _, host, port = _parse(endpoint, allow_private=allow_private)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise EndpointRefused("endpoint's host does not resolve") from None
    _checked(_addresses(found), allow_private=allow_private)


class CheckingResolver(AbstractResolver):
    """aiohttp's resolver for push sends: a name's addresses, each checked (EndpointRefused if any may not be
    contacted); the connection goes to one of these very addresses. aiohttp asks it for every new connection (its
    DNS cache is off); an IP literal never reaches it, so `PushSender.send` checks those itself."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:  # a resolver that fails (OSError) is a failed send, tried again later; a name that cannot be one is not
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except UnicodeError:
            raise EndpointRefused("endpoint's host is not a valid name") from None
        checked = set(_checked(_addresses(infos), allow_private=self.allow_private))
        return [
            {
                "hostname": host,
                "host": str(info[4][0]),
                "port": port,
                "family": info[0],
                "proto": info[2],
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for info in infos
            if str(info[4][0]) in checked
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class PushSubscriptionKeys:
    endpoint: str
    p256dh: str
    auth: str


class PushSender:
    """Sends one encrypted message to one subscription, from the scheduler's event loop (`session()` there)."""

    def __init__(self, settings: Settings) -> None:
        self.vapid = load_vapid_key(settings.VAPID_PRIVATE_KEY)
        self.public_key = application_server_key(self.vapid)
        self.subject = settings.VAPID_SUBJECT
        self.timeout = settings.PUSH_TIMEOUT
        self.ttl = settings.PUSH_TTL
        self.allow_private = settings.PUSH_ALLOW_PRIVATE_ENDPOINTS
        self.concurrency = settings.REMINDER_SEND_CONCURRENCY
        self._headers: dict[str, tuple[float, str]] = {}  # origin -> (expiry, Authorization header)

    def session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=CheckingResolver(allow_private=self.allow_private),
            use_dns_cache=False,
            limit=self.concurrency,
        )
        return aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=False
        )

    def _authorization(self, origin: str) -> str:
        now = time.time()
        cached = self._headers.get(origin)
        if cached is not None and cached[0] - now > VAPID_RENEW_BEFORE:
            return cached[1]
        expiry = int(now) + VAPID_LIFETIME
        signed: dict[str, Any] = self.vapid.sign({"aud": origin, "exp": expiry, "sub": self.subject})
        header = str(signed["Authorization"])
        self._headers[origin] = (expiry, header)
        return header

    async def send(self, session: aiohttp.ClientSession, subscription: PushSubscriptionKeys, payload: bytes) -> int:
        """POST `payload` to the subscription; returns the push service's status. Raises EndpointRefused (the
        endpoint may not be contacted now), aiohttp.ClientError or TimeoutError (no answer)."""
        scheme, host, port = _parse(subscription.endpoint, allow_private=self.allow_private)
        literal = host.strip("[]")
        if _is_ip_literal(literal):  # aiohttp asks no resolver for these
            _checked([literal], allow_private=self.allow_private)
        info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        body: bytes = WebPusher(info).encode(payload, "aes128gcm")["body"]
        headers = {
            "Authorization": self._authorization(_origin(scheme, host, port)),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.ttl),
            "Urgency": "normal",
        }
        async with session.post(subscription.endpoint, data=body, headers=headers, allow_redirects=False) as response:
            await response.content.read(MAX_RESPONSE_BYTES)  # a redirect is an answer like any other: not followed
            return response.status


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
