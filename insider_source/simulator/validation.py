"""Validation of ``POST /api/raw/v2/export`` bodies, with the v2 document's 400 messages.

Checks run in a fixed order and the first failure is returned: JSON body, ``format``,
``user_source``, presence of attributes/events, the user-source rules (segment/vertical),
attribute selectors, the events object (dates, wanted entries, params, filters), ``get_tags``,
``explode_json`` and finally ``hook``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from insider_source.simulator.catalog import CATALOG, Catalog

FORMATS = ("csv", "parquet")
USER_SOURCES = ("segment", "events")
OPERATORS = ("eq", "ne", "lt", "gt", "lteq", "gteq")
EPOCH_MS_THRESHOLD = 1e12


class BadRequest(Exception):
    """A request the API answers with 400 and ``{"error": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class EventFilter:
    """One filter of a wanted event. ``values`` is None when ``values_url`` was given."""

    key: str
    operator: str
    values: tuple[Any, ...] | None
    values_url: str | None


@dataclass(frozen=True)
class WantedEvent:
    """One entry of ``events.wanted``."""

    name: str
    params: tuple[str, ...]
    filter: EventFilter | None


@dataclass(frozen=True)
class ExportRequest:
    """A validated export request."""

    format: str
    user_source: str
    attributes: tuple[str, ...]  # expanded (``*`` → all registered), without insider_id
    events: tuple[WantedEvent, ...]
    start_date: float | None
    end_date: float | None
    get_tags: bool
    segment_id: int | None
    postfilter_id: int | None
    vertical: str | None
    hook: str


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _valid_url(value: Any) -> bool:
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        parsed = urlparse(value)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def parse_request(raw: bytes, catalog: Catalog = CATALOG) -> ExportRequest:
    """Validate a request body; raise BadRequest with the API's message on the first error."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("invalid JSON body") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid JSON body")

    fmt = body.get("format")
    if fmt is None or fmt == "":
        raise BadRequest("format is required")
    if fmt not in FORMATS:
        raise BadRequest("format must be csv or parquet")

    user_source = body.get("user_source", "segment")
    if user_source is None:
        user_source = "segment"
    if user_source not in USER_SOURCES:
        raise BadRequest("user_source must be segment or events")

    attributes = body.get("attributes")
    events = body.get("events")
    if (attributes is None or attributes == []) and events is None:
        raise BadRequest("at least one of attributes or events is required")

    segment = body.get("segment")
    vertical = body.get("vertical")
    segment_id = postfilter_id = None
    if user_source == "events":
        if segment is not None:
            raise BadRequest("segment and user_source=events are mutually exclusive")
        if events is None:
            raise BadRequest("events is required when user_source is events")
    else:
        if segment is None and vertical is None:
            raise BadRequest("segment or vertical is required when user_source is segment")
        if segment is not None:
            segment_id, postfilter_id = _segment(segment)
        if vertical is not None and (not isinstance(vertical, str) or not vertical):
            raise BadRequest("invalid vertical")

    attrs = _attributes(attributes, catalog)
    wanted: tuple[WantedEvent, ...] = ()
    start = end = None
    if events is not None:
        start, end, wanted = _events(events, catalog)

    get_tags = body.get("get_tags", False)
    if get_tags is None:
        get_tags = False
    if not isinstance(get_tags, bool):
        raise BadRequest("get_tags must be a boolean")
    explode = body.get("explode_json")
    if explode is not None and not isinstance(explode, dict):
        raise BadRequest("explode_json must be an object")

    hook = body.get("hook")
    if hook is None or hook == "":
        raise BadRequest("hook is required")
    if not _valid_url(hook):
        raise BadRequest("invalid hook")

    return ExportRequest(
        format=fmt, user_source=user_source, attributes=attrs, events=wanted,
        start_date=start, end_date=end, get_tags=get_tags, segment_id=segment_id,
        postfilter_id=postfilter_id, vertical=vertical, hook=hook,
    )


def _segment(segment: Any) -> tuple[int, int | None]:
    if not isinstance(segment, dict) or not positive_int(segment.get("segment_id")):
        raise BadRequest("segment_id must be a positive integer")
    postfilter = segment.get("postfilter")
    if postfilter is None:
        return segment["segment_id"], None
    if not isinstance(postfilter, dict) or not positive_int(postfilter.get("postfilter_id")):
        raise BadRequest("postfilter_id must be a positive integer")
    return segment["segment_id"], postfilter["postfilter_id"]


def _attributes(attributes: Any, catalog: Catalog) -> tuple[str, ...]:
    if attributes is None:
        return ()
    if not isinstance(attributes, list):
        raise BadRequest("attributes must be a list")
    if "*" in attributes:
        if len(attributes) > 1:
            raise BadRequest("invalid attribute *")
        return tuple(catalog.attribute_names)
    seen: set[str] = set()
    for name in attributes:
        if catalog.is_malformed(name):
            raise BadRequest(f"invalid attribute {_shown(name)}")
        if name not in catalog.attributes:
            raise BadRequest(f"unknown attribute {name}")
        if name in seen:
            raise BadRequest(f"duplicate attribute {name}")
        seen.add(name)
    return tuple(attributes)


def epoch_seconds(events: dict[str, Any], key: str) -> float:
    """The events object's ``start_date``/``end_date`` (v1 and v2 share the rule)."""
    value = events.get(key)
    if value is None:
        raise BadRequest(f"{key} is required")
    if not _is_number(value) or value < 0:
        raise BadRequest(f"{key} must be a number of epoch seconds")
    if value > EPOCH_MS_THRESHOLD:
        raise BadRequest(f"{key} must be epoch seconds, not milliseconds")
    return float(value)


def _events(events: Any, catalog: Catalog) -> tuple[float, float, tuple[WantedEvent, ...]]:
    if not isinstance(events, dict):
        raise BadRequest("events must be an object")
    start = epoch_seconds(events, "start_date")
    end = epoch_seconds(events, "end_date")
    if end <= start:
        raise BadRequest("end_date must be greater than start_date")
    wanted = events.get("wanted")
    if wanted is None:
        raise BadRequest("wanted is required")
    if not isinstance(wanted, list) or not wanted:
        raise BadRequest("wanted must be a non-empty list")
    out: list[WantedEvent] = []
    seen: set[str] = set()
    for entry in wanted:
        if not isinstance(entry, dict):
            raise BadRequest("each wanted entry must be an object")
        name = entry.get("event_name")
        if name is None:
            raise BadRequest("event_name is required")
        if catalog.is_malformed(name):
            raise BadRequest(f"invalid event name {_shown(name)}")
        if name not in catalog.events:
            raise BadRequest(f"unknown event name {name}")
        if name in seen:
            raise BadRequest(f"duplicate event name {name}")
        seen.add(name)
        params = entry.get("params")
        if params is None:
            raise BadRequest("params is required")
        if not isinstance(params, list):
            raise BadRequest("params must be a list")
        seen_params: set[str] = set()
        for param in params:
            _check_param(catalog, name, param)
            if param in seen_params:
                raise BadRequest(f"duplicate event parameter {param}")
            seen_params.add(param)
        out.append(WantedEvent(name, tuple(params), _filter(entry.get("filters"), name,
                                                              catalog)))
    return start, end, tuple(out)


def _check_param(catalog: Catalog, event: str, param: Any) -> None:
    if catalog.is_malformed(param):
        raise BadRequest(f"invalid event parameter {_shown(param)}")
    if param not in catalog.events[event]:
        raise BadRequest(f"unknown event parameter {param}")


def filter_shape(filters: Any, check_key: Callable[[Any], None],
                 url_ok: Callable[[Any], bool]) -> dict[str, Any] | None:
    """The one filter of a wanted event, checked for the rules v1 and v2 share: a list of at
    most one object, a key (``check_key`` raises BadRequest for a bad one), one of the six
    operators, ``values`` (non-empty) xor ``values_url`` (``url_ok``)."""
    if filters is None:
        return None
    if not isinstance(filters, list):
        raise BadRequest("filters must be a list")
    if len(filters) > 1:
        raise BadRequest("at most one filter per event")
    if not filters:
        return None
    f = filters[0]
    if not isinstance(f, dict):
        raise BadRequest("each filter must be an object")
    key = f.get("key")
    if key is None:
        raise BadRequest("filter key is required")
    check_key(key)
    operator = f.get("operator")
    if operator is None:
        raise BadRequest("filter operator is required")
    if operator not in OPERATORS:
        raise BadRequest(f"invalid filter operator {_shown(operator)}")
    has_values, has_url = f.get("values") is not None, f.get("values_url") is not None
    if has_values and has_url:
        raise BadRequest("provide either values or values_url, not both")
    if not has_values and not has_url:
        raise BadRequest("values or values_url is required")
    if has_url:
        if not url_ok(f["values_url"]):
            raise BadRequest("invalid values_url")
    elif not isinstance(f["values"], list) or not f["values"]:
        raise BadRequest("values must be a non-empty list")
    return f


def _filter(filters: Any, event: str, catalog: Catalog) -> EventFilter | None:
    f = filter_shape(filters, lambda key: _check_param(catalog, event, key), _valid_url)
    if f is None:
        return None
    key, operator = f["key"], f["operator"]
    if f.get("values_url") is not None:
        return EventFilter(key, operator, None, f["values_url"])
    values = f["values"]
    typ = catalog.param_type(event, key)
    for v in values:
        if not _fits(v, typ):
            raise BadRequest(f"invalid filter value {json.dumps(v)} for {key}")
    if pa.types.is_floating(typ):
        values = [float(v) for v in values]
    return EventFilter(key, operator, tuple(values), None)


def _fits(value: Any, typ: pa.DataType) -> bool:
    if pa.types.is_boolean(typ):
        return isinstance(value, bool)
    if pa.types.is_integer(typ):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(typ):
        return _is_number(value)
    return isinstance(value, str)
