"""Values that cross the public API: what is remembered, what a recall asks, what it returns."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from athena.errors import InvalidInput, QueryTooLong, UnknownLayer

LAYERS: Final = ("episodic", "semantic", "procedural", "prospective", "graph")
MAX_QUERY_CHARS: Final = 4_000
MAX_TEXT_CHARS: Final = 100_000
MAX_K: Final = 1_000
MAX_TENANT_CHARS: Final = 256
MAX_METADATA_BYTES: Final = 64_000
MAX_TIMEOUT_SECONDS: Final = threading.TIMEOUT_MAX


@dataclass(frozen=True, slots=True)
class Hit:
    """One recalled memory.

    ``sources`` are the keys of the episodic turns the memory derives from (a turn is its
    own source), so an agent can cite them.
    """

    id: int
    layer: str
    text: str
    score: float
    tenant: str
    key: str
    kind: str
    session: str | None
    actor: str | None
    event_time: float | None
    created_at: float
    updated_at: float
    sources: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict.

        >>> hit = Hit(1, "semantic", "x", 0.5, "t", "k", "fact", None, None, None, 0.0, 0.0, ())
        >>> hit.to_dict()["id"]
        1
        """
        return {
            "id": self.id,
            "layer": self.layer,
            "text": self.text,
            "score": self.score,
            "tenant": self.tenant,
            "key": self.key,
            "kind": self.kind,
            "session": self.session,
            "actor": self.actor,
            "event_time": self.event_time,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "sources": list(self.sources),
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class MemoryInput:
    """A memory to store. Layer-specific fields go in ``attributes``:

    - procedural: ``name``, ``trigger``, ``steps`` (list of str), ``success_count``,
      ``failure_count``
    - prospective: ``due_at`` (epoch seconds), ``status`` (open|done|cancelled), ``priority`` (0-10)
    - graph: ``relations``: list of ``[subject, relation, object]`` triples

    ``key`` makes a write idempotent: writing the same (tenant, layer, key) again updates the
    memory instead of creating a duplicate.
    """

    layer: str
    text: str
    tenant: str
    key: str | None = None
    kind: str | None = None
    session: str | None = None
    actor: str | None = None
    event_time: float | None = None
    sources: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecallQuery:
    """A validated recall request. Build with :func:`make_query`."""

    text: str
    tenant: str
    k: int
    layers: tuple[str, ...]
    since: float | None = None
    until: float | None = None
    session: str | None = None
    actor: str | None = None
    kinds: tuple[str, ...] | None = None

    def filters(self) -> tuple[tuple[str, Any], ...]:
        """The filter part of the query, in a stable order (used in cache keys)."""
        return (
            ("since", self.since),
            ("until", self.until),
            ("session", self.session),
            ("actor", self.actor),
            ("kinds", self.kinds),
        )


def check_tenant(tenant: object) -> str:
    """Validate a tenant id.

    >>> check_tenant("acme")
    'acme'
    """
    if not isinstance(tenant, str) or not tenant.strip():
        raise InvalidInput("tenant must be a non-empty string")
    if len(tenant) > MAX_TENANT_CHARS:
        raise InvalidInput(f"tenant is longer than {MAX_TENANT_CHARS} characters")
    check_encodable(tenant, "tenant")
    return tenant


def check_layers(layers: Sequence[str] | None) -> tuple[str, ...]:
    """Validate layer names; ``None`` means all five, in canonical order.

    >>> check_layers(["semantic", "episodic"])
    ('episodic', 'semantic')
    """
    if layers is None:
        return LAYERS
    if isinstance(layers, str):
        layers = [layers]
    chosen = set()
    for name in layers:
        if name not in LAYERS:
            raise UnknownLayer(f"unknown layer {name!r}; layers are: {', '.join(LAYERS)}")
        chosen.add(name)
    if not chosen:
        raise InvalidInput("layers must name at least one layer")
    return tuple(layer for layer in LAYERS if layer in chosen)


def check_layer(layer: str) -> str:
    return check_layers([layer])[0]


def check_text(text: object, what: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"{what} is longer than {MAX_TEXT_CHARS} characters")
    check_encodable(text, what)
    return text


def make_query(
    text: object,
    tenant: object,
    k: object = 10,
    layers: Sequence[str] | None = None,
    since: float | None = None,
    until: float | None = None,
    session: str | None = None,
    actor: str | None = None,
    kinds: Sequence[str] | None = None,
) -> RecallQuery:
    """Validate the arguments of a recall into a :class:`RecallQuery`.

    >>> make_query("where is the key?", "t1", k=5).k
    5
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("query must be a non-empty string")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryTooLong(f"query is longer than {MAX_QUERY_CHARS} characters")
    check_encodable(text, "query")
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidInput("k must be an integer")
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")
    bounds = [check_bound(bound, name) for name, bound in (("since", since), ("until", until))]
    for name, value in (("session", session), ("actor", actor)):
        if value is not None:
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"{name} must be a non-empty string")
            check_encodable(value, name)
    if kinds is not None:
        if isinstance(kinds, str) or not all(isinstance(x, str) and x for x in kinds):
            raise InvalidInput("kinds must be a list of kind names")
        for kind in kinds:
            check_encodable(kind, "kinds")
        kinds = tuple(sorted(set(kinds)))
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise InvalidInput("since must not be after until")
    return RecallQuery(
        text=text,
        tenant=check_tenant(tenant),
        k=k,
        layers=check_layers(layers),
        since=low,
        until=high,
        session=session,
        actor=actor,
        kinds=None if kinds is None else tuple(kinds),
    )


class RequestMemo:
    """:func:`make_query` remembered for the plain calls agents repeat (no filters).

    A cached recall costs tens of µs, and validating its arguments was a sixth of that.
    Only exact types are remembered (``k=True`` or a ``str`` subclass is validated afresh,
    since ``True == 1`` would share a key), only successful validations are kept (bad input
    raises every time), and the memo is emptied when it holds ``limit`` queries.

    >>> memo = RequestMemo()
    >>> memo.make("where?", "t1", 5, None) is memo.make("where?", "t1", 5, None)
    True
    """

    __slots__ = ("_kept", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._kept: dict[tuple[str, str, int, tuple[str, ...] | None], RecallQuery] = {}

    def make(
        self,
        text: object,
        tenant: object,
        k: object,
        layers: Sequence[str] | None,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
        actor: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> RecallQuery:
        """:func:`make_query` of the same arguments, remembered when they are plain."""
        if (
            type(text) is not str
            or type(tenant) is not str
            or type(k) is not int
            or since is not None
            or until is not None
            or session is not None
            or actor is not None
            or kinds is not None
        ):
            return make_query(text, tenant, k, layers, since, until, session, actor, kinds)
        named: tuple[str, ...] | None = None
        if layers is not None:
            if type(layers) not in (tuple, list) or not all(type(x) is str for x in layers):
                return make_query(text, tenant, k, layers)
            named = tuple(layers)
        key = (text, tenant, k, named)
        query = self._kept.get(key)
        if query is None:
            query = make_query(text, tenant, k, layers)
            if len(self._kept) >= self.limit:
                self._kept.clear()
            self._kept[key] = query
        return query


def check_bound(value: object, what: str) -> float | None:
    """A time filter (``since``, ``until``) as a finite float; ``None`` passes.

    >>> check_bound(10, "since")
    10.0
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number of seconds since the epoch")
    try:
        number = float(value)
    except OverflowError:  # an int past a float's range
        raise InvalidInput(f"{what} is too large for a time") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{what} must be a finite number of seconds since the epoch")
    return number


def check_timeout(value: object) -> float | None:
    """A recall timeout: positive, finite seconds (at most ``threading.TIMEOUT_MAX``).

    >>> check_timeout(2)
    2.0
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("timeout must be a positive number of seconds")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not 0 < number <= MAX_TIMEOUT_SECONDS:  # also refuses nan
        raise InvalidInput(
            f"timeout must be a positive number of seconds, at most {MAX_TIMEOUT_SECONDS:g}"
        )
    return number


def check_encodable(value: str, what: str) -> None:
    """Refuse lone surrogates (SQLite stores UTF-8) and NUL (it would truncate FTS tokens).

    >>> check_encodable("ok", "actor")
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid unicode (lone surrogate)") from exc
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
