"""Keeps the test process on loopback: a connection anywhere else fails the test, and a resolver stub.

`install()` (called by `pytest_configure`) wraps `socket.socket.connect` and `connect_ex`, which `create_connection`,
`http.client`, httpx, redis-py and asyncio's selector loop all go through: a connection to an IPv4 or IPv6 address
outside 127.0.0.0/8 and ::1 raises `NonLoopbackConnection` before any packet is sent, and is listed in `attempts`.
uvloop's `create_connection` (which connects in C) is guarded too. A host name given to connect itself is resolved
by a stub resolver only (`localhost` always passes). Not seen: C clients with sockets of their own (libpq), unconnected
UDP `sendto`, DNS queries.

`stub_resolver(monkeypatch, {"push.example": ["127.0.0.1"]})` answers `socket.getaddrinfo` from a table: listed
names, IP literals and `localhost`; any other name is `socket.gaierror`, without asking DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import pytest

attempts: list[tuple[str, int]] = []  # (host, port) of every refused connection, in order

_Address = Any  # what socket.connect accepts: a tuple for AF_INET/AF_INET6, a path for AF_UNIX, ...
_original: dict[str, Callable[..., Any]] = {}


class NonLoopbackConnection(AssertionError):
    """A test tried to connect beyond loopback."""


def is_loopback(host: str) -> bool:
    """Whether `host` is an IP literal in 127.0.0.0/8 or ::1 (also as an IPv4-mapped IPv6 address)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Refused(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _loopback_target(host: str, port: int, family: int, kind: int) -> str:
    """The loopback address to connect to for `host`; raises _Refused when there is none.

    A host name is resolved here, through a stub resolver only (never DNS), and the address found is connected to:
    the C connect would otherwise ask the system resolver. `localhost` always passes.
    """
    target = host
    if not _is_ip(host):
        resolver = socket.getaddrinfo
        if host.lower().rstrip(".") == "localhost":
            return "127.0.0.1" if family == socket.AF_INET else "::1" if family == socket.AF_INET6 else host
        if not isinstance(resolver, StubResolver):
            raise _Refused("a host name other than localhost, with no stub resolver")
        try:
            target = str(resolver(host, port, family, kind)[0][4][0])
        except socket.gaierror as exc:
            raise _Refused("a name the stub resolver does not know") from exc
    if not is_loopback(target):
        raise _Refused("not a loopback address" + ("" if target == host else f" ({target})"))
    return target


def _refuse(host: str, port: int, why: str) -> NonLoopbackConnection:
    attempts.append((host, port))
    return NonLoopbackConnection(f"connect to {host}:{port}: {why}; tests must stay on loopback (tests/netguard.py)")


def _checked(sock: socket.socket, address: _Address) -> _Address:
    """The address to connect `sock` to, once it is on loopback; a refused socket is closed, as callers such as
    `create_connection` close it on OSError only."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or len(address) < 2:
        return address  # AF_UNIX and the rest
    raw_host, port = address[0], int(address[1])
    host = raw_host.decode("idna") if isinstance(raw_host, bytes) else str(raw_host)
    try:
        target = _loopback_target(host, port, sock.family, sock.type)
    except _Refused as refused:
        sock.close()
        raise _refuse(host, port, refused.why) from None
    return (target, *address[1:])


def _guarded_connect(self: socket.socket, address: _Address) -> None:
    _original["connect"](self, _checked(self, address))


def _guarded_connect_ex(self: socket.socket, address: _Address) -> int:
    code: int = _original["connect_ex"](self, _checked(self, address))
    return code


async def _guarded_create_connection(
    self: Any, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
) -> Any:
    """uvloop's `create_connection`, which connects in C (uvicorn runs the app on uvloop)."""
    if host is not None:  # None: an existing `sock=`, checked when it was connected
        name = host.decode("idna") if isinstance(host, bytes) else str(host)
        try:
            host = _loopback_target(name, int(port or 0), int(kwargs.get("family", 0)), socket.SOCK_STREAM)
        except _Refused as refused:
            raise _refuse(name, int(port or 0), refused.why) from None
    return await _original["uvloop.create_connection"](self, protocol_factory, host, port, **kwargs)


def install() -> None:
    """Guards `socket.socket.connect` and `connect_ex`, and uvloop's `create_connection` (once)."""
    if _original:
        return
    _original["connect"] = socket.socket.connect
    _original["connect_ex"] = socket.socket.connect_ex
    setattr(socket.socket, "connect", _guarded_connect)  # noqa: B010 - a method of a class, replaced on purpose
    setattr(socket.socket, "connect_ex", _guarded_connect_ex)  # noqa: B010
    try:
        import uvloop
    except ImportError:
        return
    _original["uvloop.create_connection"] = uvloop.Loop.create_connection
    setattr(uvloop.Loop, "create_connection", _guarded_create_connection)  # noqa: B010


def uninstall() -> None:
    """Puts the original methods back."""
    if not _original:
        return
    setattr(socket.socket, "connect", _original.pop("connect"))  # noqa: B010
    setattr(socket.socket, "connect_ex", _original.pop("connect_ex"))  # noqa: B010
    if "uvloop.create_connection" in _original:
        import uvloop

        setattr(uvloop.Loop, "create_connection", _original.pop("uvloop.create_connection"))  # noqa: B010


_GetAddrInfoResult = list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]]
_KINDS = ((socket.SOCK_STREAM, socket.IPPROTO_TCP), (socket.SOCK_DGRAM, socket.IPPROTO_UDP), (socket.SOCK_RAW, 0))


class StubResolver:
    """A `socket.getaddrinfo` that answers from `mapping` (name -> IP strings) and never asks DNS.

    IP literals resolve to themselves, `localhost` to 127.0.0.1 and ::1 unless the mapping says otherwise, and any
    other name raises `socket.gaierror`. Use it with `install(monkeypatch)` or as a context manager; `lookups` lists
    every name asked for.
    """

    def __init__(self, mapping: Mapping[str, Iterable[str]]) -> None:
        self.mapping: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}
        for name, ips in mapping.items():
            addresses = list(ips)
            for ip in addresses:
                ipaddress.ip_address(ip)  # ValueError for anything but an IP literal
            self.mapping[self._key(name)] = addresses
        self.lookups: list[str] = []
        self._saved: Callable[..., Any] | None = None

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".")

    def __call__(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> _GetAddrInfoResult:
        """`socket.getaddrinfo`, from the table."""
        name = host.decode("idna") if isinstance(host, bytes) else host
        if name is None:
            addresses = ["0.0.0.0", "::"] if flags & socket.AI_PASSIVE else ["127.0.0.1", "::1"]
        else:
            self.lookups.append(name)
            if _is_ip(name):
                addresses = [name]
            elif flags & socket.AI_NUMERICHOST or self._key(name) not in self.mapping:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            else:
                addresses = self.mapping[self._key(name)]
        number = self._port(port, flags)
        results: _GetAddrInfoResult = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            af = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family not in (0, af):
                continue
            sockaddr: tuple[Any, ...] = (address, number) if af == socket.AF_INET else (address, number, 0, 0)
            for kind, kind_proto in _KINDS:
                if type in (0, kind) and proto in (0, kind_proto):
                    canonname = name if (flags & socket.AI_CANONNAME and name is not None) else ""
                    results.append((af, kind, proto or kind_proto, canonname, sockaddr))
        if not results:
            raise socket.gaierror(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        return results

    @staticmethod
    def _port(port: bytes | str | int | None, flags: int) -> int:
        if port is None:
            return 0
        if isinstance(port, int):
            return port
        text = port.decode() if isinstance(port, bytes) else port
        if text.isascii() and text.isdigit():
            return int(text)
        if flags & socket.AI_NUMERICSERV:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        try:
            return socket.getservbyname(text)  # /etc/services: no network
        except OSError as exc:
            raise socket.gaierror(socket.EAI_SERVICE, "Servname not supported for ai_socktype") from exc

    def install(self, monkeypatch: pytest.MonkeyPatch) -> StubResolver:
        """Replaces `socket.getaddrinfo` until the test ends."""
        monkeypatch.setattr(socket, "getaddrinfo", self)
        return self

    def __enter__(self) -> StubResolver:
        self._saved = socket.getaddrinfo
        setattr(socket, "getaddrinfo", self)  # noqa: B010
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved is not None:
            setattr(socket, "getaddrinfo", self._saved)  # noqa: B010
            self._saved = None


def stub_resolver(monkeypatch: pytest.MonkeyPatch, mapping: Mapping[str, Iterable[str]]) -> StubResolver:
    """A `StubResolver` for `mapping`, in place of `socket.getaddrinfo` until the test ends."""
    return StubResolver(mapping).install(monkeypatch)
