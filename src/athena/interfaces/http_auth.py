"""Who gets in: bearer tokens, per-client rate limits, body size and in-flight limits.

- :class:`Gate` checks ``Authorization: Bearer <token>`` against a token table
  (token -> the tenants it may reach, ``None`` = all), and rate-limits each token (or
  each client address when auth is off) with a token bucket.
- :class:`Admission` is ASGI middleware that reads the body up to ``max_body_bytes``
  (413 past it, judged on Content-Length first, then on the bytes actually streamed) and
  bounds the requests running at once (503 with Retry-After past ``max_inflight``), so
  overload is refused instead of queued without end.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from athena.errors import InvalidInput
from athena.interfaces.http_errors import ApiError, error_response

Tokens = Mapping[str, Sequence[str] | None]
_MAX_BUCKETS = 10_000
_GONE = object()
_TOO_LARGE = object()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: a rate-limit key and the tenants it may reach."""

    key: str
    tenants: frozenset[str] | None  # None: every tenant


def load_tokens(path: str | Path) -> dict[str, list[str] | None]:
    """Read a tokens file: a JSON object ``{token: [tenant, ...] or null}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read tokens file {path}: {exc.strerror}") from None
    except (ValueError, RecursionError):
        raise InvalidInput(f"tokens file {path} is not valid JSON") from None
    return check_tokens(data)


def check_tokens(data: object) -> dict[str, list[str] | None]:
    """Validate a token table.

    >>> check_tokens({"s3cret": ["acme"], "admin": None})
    {'s3cret': ['acme'], 'admin': None}
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("tokens must be an object {token: [tenants] or null}")
    out: dict[str, list[str] | None] = {}
    for token, tenants in data.items():
        if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
            raise InvalidInput("each token must be a non-empty string without spaces")
        if tenants is None:
            out[token] = None
        elif isinstance(tenants, Sequence) and not isinstance(tenants, str):
            if not all(isinstance(t, str) and t for t in tenants):
                raise InvalidInput("a token's tenants must be a list of tenant ids")
            out[token] = list(tenants)
        else:
            raise InvalidInput("a token's tenants must be a list of tenant ids or null")
    return out


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Gate:
    """Authentication, tenant authorisation and rate limiting for one app."""

    def __init__(self, tokens: Tokens | None, rate_limit_per_minute: int | None) -> None:
        if rate_limit_per_minute is not None and (
            isinstance(rate_limit_per_minute, bool) or rate_limit_per_minute < 1
        ):
            raise InvalidInput("rate_limit_per_minute must be a positive integer")
        self.enabled = tokens is not None
        # Looked up by digest: the lookup's timing depends on a hash, not on the token.
        self._grants: dict[bytes, Principal] = {}
        for token, tenants in check_tokens(tokens or {}).items():
            digest = _digest(token)
            scope = None if tenants is None else frozenset(tenants)
            self._grants[digest] = Principal(digest.hex()[:16], scope)
        self.rate = rate_limit_per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def identify(self, token: str | None, client: str) -> Principal:
        """The caller: 401 (revealing nothing else) unless auth is off or the token is known."""
        if not self.enabled:
            return Principal(f"client:{client}", None)
        principal = None if token is None else self._grants.get(_digest(token))
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid bearer token is required",
                {"WWW-Authenticate": "Bearer"},
            )
        return principal

    def allow_tenant(self, principal: Principal, tenant: str) -> None:
        if principal.tenants is not None and tenant not in principal.tenants:
            raise ApiError(403, "forbidden", "this token may not access this tenant")

    def allow_global(self, principal: Principal) -> None:
        """Process-wide endpoints need a token that reaches every tenant."""
        if principal.tenants is not None:
            raise ApiError(403, "forbidden", "this endpoint needs a token valid for all tenants")

    def throttle(self, principal: Principal, now: float | None = None) -> None:
        """Take one request from the caller's bucket (``rate`` per minute, burst ``rate``).
        Locked: the API's handlers call it on the event loop, the MCP tools on threads."""
        if self.rate is None:
            return
        with self._lock:
            self._take(principal, time.monotonic() if now is None else now)

    def _take(self, principal: Principal, now: float) -> None:
        assert self.rate is not None
        per_second = self.rate / 60.0
        level, last = self._buckets.get(principal.key, (float(self.rate), now))
        level = min(float(self.rate), level + (now - last) * per_second)
        if level < 1.0:
            self._buckets[principal.key] = (level, now)
            wait = max(1, math.ceil((1.0 - level) / per_second))
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {self.rate} requests per minute exceeded",
                {"Retry-After": str(wait)},
            )
        self._buckets[principal.key] = (level - 1.0, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        assert self.rate is not None
        full = 60.0  # a bucket idle for a minute is full again: forgetting it changes nothing
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}


class Admission:
    """ASGI middleware: bounded body size and a bounded number of requests in flight."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_inflight: int,
        exempt: Collection[str] = (),
        on_reject: Callable[[str], None] | None = None,
        gate: Gate | None = None,
        public: Collection[str] = (),
    ) -> None:
        if max_body_bytes < 1 or max_inflight < 1:
            raise InvalidInput("max_body_bytes and max_inflight must be positive")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight
        self.exempt = frozenset(exempt)
        self.inflight = 0
        self._on_reject = on_reject or (lambda reason: None)
        self.gate = gate
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.gate is not None and self.gate.enabled and scope["path"] not in self.public:
            # Before the body is read or parsed: a caller without a valid token gets 401
            # and learns nothing, not even whether its JSON was well-formed.
            try:
                self.gate.identify(bearer_token(headers), "")
            except ApiError as exc:
                self._on_reject("unauthorized")
                response = error_response(exc.status, exc.code, exc.message, exc.headers)
                await response(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await self._reject(scope, receive, send, 400, "bad_request", "bad Content-Length")
                return
            if int(length) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        body = await self._read_body(receive)
        if body is _GONE:
            return
        if body is _TOO_LARGE:
            await self._too_large(scope, receive, send)
            return
        assert isinstance(body, bytes)
        if scope["path"] in self.exempt:
            await self.app(scope, _replay(body, receive), send)
            return
        if self.inflight >= self.max_inflight:
            self._on_reject("overloaded")
            await self._reject(
                scope,
                receive,
                send,
                503,
                "overloaded",
                "too many requests in flight",
                {"Retry-After": "1"},
            )
            return
        self.inflight += 1
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.inflight -= 1

    async def _read_body(self, receive: Receive) -> bytes | object:
        """The whole body, or :data:`_TOO_LARGE` past the limit, or :data:`_GONE`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _GONE  # http.disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return _TOO_LARGE
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._on_reject("body_too_large")
        message = f"request body is larger than {self.max_body_bytes} bytes"
        await self._reject(scope, receive, send, 413, "payload_too_large", message)

    async def _reject(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        extra = {"Connection": "close"} if status == 413 else {}
        response = error_response(status, code, message, {**extra, **(headers or {})})
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the buffered body, then waits on the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None.

    >>> bearer_token({"authorization": "Bearer s3cret "}), bearer_token({})
    ('s3cret', None)
    """
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def client_address(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
