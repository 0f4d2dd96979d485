"""Settings of the Insider source, read from dlt config/secrets and validated before any call.

All keys live in section ``[sources.insider]`` (env vars ``SOURCES__INSIDER__<KEY>``).
``load_settings`` resolves them with dlt's config providers; ``InsiderSettings.from_raw`` mirrors
every 400 rule of Raw Export v2 so a bad value is reported with its field, the value and the fix
before anything is submitted; ``build_request_body`` turns settings and a window into the v2 body.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)
from dlt.common.configuration.specs import BaseConfiguration
from dlt.common.typing import TSecretStrValue

from insider_source import settings as s
from insider_source.exceptions import ConfigError, ConfigErrors, MissingSettings
from insider_source.window import Window


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@configspec
class InsiderConfiguration(BaseConfiguration):
    """The raw keys of ``[sources.insider]`` as dlt resolves them (nothing checked yet)."""

    partner_name: str | None = None
    request_token: TSecretStrValue | None = None
    base_url: str | None = None
    format: str | None = None
    user_source: str | None = None
    segment_id: Any | None = None
    postfilter_id: Any | None = None
    attributes: Any | None = None
    events: Any | None = None
    get_tags: Any | None = None
    hook: str | None = None
    initial_start_date: Any | None = None
    lookback_days: Any | None = None
    poll_interval_seconds: Any | None = None
    max_wait_seconds: Any | None = None
    backfill_window_days: Any | None = None
    api_version: str | None = None


@dataclass
class InsiderSettings:
    """Validated settings. Build with ``InsiderSettings.from_raw`` or ``load_settings``."""

    partner_name: str
    request_token: Secret
    hook: str
    base_url: str = s.DEFAULT_BASE_URL
    format: str = "parquet"
    user_source: str = "segment"
    segment_id: int | None = None
    postfilter_id: int | None = None
    attributes: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    get_tags: bool = False
    initial_start_date: dt.date | None = None
    lookback_days: int = s.DEFAULT_LOOKBACK_DAYS
    poll_interval_seconds: float = s.DEFAULT_POLL_INTERVAL_SECONDS
    max_wait_seconds: float = s.DEFAULT_MAX_WAIT_SECONDS
    backfill_window_days: int = s.DEFAULT_BACKFILL_WINDOW_DAYS
    api_version: str = "v2"

    def __repr__(self) -> str:  # the dataclass repr would be fine (Secret hides), keep it short
        return f"InsiderSettings(partner_name={self.partner_name!r}, format={self.format!r}, ...)"

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> InsiderSettings:
        """Validate raw values (as from config) and return settings, or raise ConfigError(s)."""
        return _Validator(raw).run()


def load_settings(**overrides: Any) -> InsiderSettings:
    """Resolve ``[sources.insider]`` from dlt config/secrets/env, apply overrides, validate."""
    try:
        cfg = resolve_configuration(InsiderConfiguration(), sections=s.CONFIG_SECTIONS)
    except ConfigValueCannotBeCoercedException as e:
        raise ConfigError(
            e.field_name, "<value hidden>" if e.field_name == "request_token" else e.field_value,
            f"it must be of type {getattr(e.hint, '__name__', e.hint)}.",
        ) from None
    except ConfigFieldMissingException as e:  # pragma: no cover - all fields are optional
        raise MissingSettings(list(e.fields)) from None
    raw = {k: getattr(cfg, k) for k in InsiderConfiguration.get_resolvable_fields()}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return InsiderSettings.from_raw(raw)


class _Validator:
    """Collects every problem in the raw settings, then raises them together."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.errors: list[ConfigError] = []
        self.v1 = False

    def err(self, field_: str, value: object, fix: str) -> None:
        self.errors.append(ConfigError(field_, value, fix))

    def run(self) -> InsiderSettings:
        raw = self.raw
        missing = [k for k in ("partner_name", "request_token") if not raw.get(k)]
        if missing:
            raise MissingSettings(missing)
        token = raw["request_token"]
        partner = self.partner(raw["partner_name"])
        base_url = self.url("base_url", raw.get("base_url") or s.DEFAULT_BASE_URL, "the API")
        api = self.choice("api_version", raw.get("api_version") or "v2", s.API_VERSIONS)
        self.v1 = api == "v1"
        fmt = self.choice("format", raw.get("format") or "parquet",
                          s.FORMATS_V1 if self.v1 else s.FORMATS)
        user_source = self.choice("user_source", raw.get("user_source") or "segment",
                                  s.USER_SOURCES)
        segment_id = self.positive_int("segment_id", raw.get("segment_id"))
        postfilter_id = self.positive_int("postfilter_id", raw.get("postfilter_id"))
        attributes = self.attributes(raw.get("attributes"))
        events = self.events(raw.get("events"))
        get_tags = self.boolean("get_tags", raw.get("get_tags", False))
        hook = self.hook(raw.get("hook"))
        start = self.date("initial_start_date", raw.get("initial_start_date"))
        lookback = self.number("lookback_days", raw.get("lookback_days"),
                               s.DEFAULT_LOOKBACK_DAYS, integer=True, maximum=90)
        poll = self.number("poll_interval_seconds", raw.get("poll_interval_seconds"),
                           s.DEFAULT_POLL_INTERVAL_SECONDS, positive=True)
        max_wait = self.number("max_wait_seconds", raw.get("max_wait_seconds"),
                               s.DEFAULT_MAX_WAIT_SECONDS)
        backfill_days = self.number("backfill_window_days", raw.get("backfill_window_days"),
                                    s.DEFAULT_BACKFILL_WINDOW_DAYS, integer=True, positive=True,
                                    maximum=366)

        if user_source == "segment" and segment_id is None and "segment_id" not in self.fields():
            self.err("segment_id", raw.get("segment_id"),
                     "user_source 'segment' needs the saved segment's id, e.g. segment_id = 12345 "
                     "(or set user_source = \"events\" to let the events define the users).")
        if user_source == "events":
            for key in ("segment_id", "postfilter_id"):
                if raw.get(key) is not None:
                    self.err(key, raw.get(key),
                             "a segment and user_source 'events' are mutually exclusive: remove "
                             f"{key}, or set user_source = \"segment\".")
            if not events and "events" not in self.fields():
                self.err("events", raw.get("events"),
                         "user_source 'events' needs at least one event, e.g. events = "
                         '[{event_name = "purchase", params = ["product_id"]}].')
        if postfilter_id is not None and segment_id is None and user_source == "segment":
            pass  # reported through segment_id already
        if not attributes and not events and not {"attributes", "events"} & self.fields():
            self.err("attributes", raw.get("attributes"),
                     "at least one of attributes or events is required, e.g. attributes = "
                     '["email", "custom.loyalty_tier"] or attributes = ["*"].')
        if self.v1:
            self.v1_rules(raw, user_source, get_tags)
        if self.errors:
            raise self.errors[0] if len(self.errors) == 1 else ConfigErrors(self.errors)
        return InsiderSettings(
            partner_name=partner, request_token=Secret(str(token)), hook=hook, base_url=base_url,
            format=fmt, user_source=user_source, segment_id=segment_id,
            postfilter_id=postfilter_id, attributes=attributes, events=events, get_tags=get_tags,
            initial_start_date=start, lookback_days=int(lookback), poll_interval_seconds=poll,
            max_wait_seconds=max_wait, backfill_window_days=int(backfill_days), api_version=api,
        )

    def v1_rules(self, raw: dict[str, Any], user_source: str, get_tags: bool) -> None:
        """What Raw Export v1 cannot do (the v2-only options)."""
        if user_source != "segment":
            self.err("user_source", user_source, "Raw Export v1 exports a segment only: set "
                     "user_source = \"segment\" and segment_id, or use api_version = \"v2\".")
        if raw.get("postfilter_id") is not None:
            self.err("postfilter_id", raw.get("postfilter_id"), "Raw Export v1 has no "
                     "post-filters: remove postfilter_id, or use api_version = \"v2\".")
        if get_tags:
            self.err("get_tags", True, "Raw Export v1 has no tags: set get_tags = false, or use "
                     "api_version = \"v2\".")

    def fields(self) -> set[str]:
        return {e.field.split("[")[0].split(".")[0] for e in self.errors}

    # -- single fields -------------------------------------------------------------------------

    def partner(self, value: Any) -> str:
        v = str(value)
        if v != v.lower():
            self.err("partner_name", v, f"the partner name is lowercase: use {v.lower()!r}.")
        elif not s.PARTNER_RE.match(v):
            self.err("partner_name", v, "copy the partner name from InOne > Settings > Account "
                     "Settings (lowercase letters, digits, '-' or '_').")
        return v

    def url(self, name: str, value: Any, what: str) -> str:
        v = str(value).strip()
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.err(name, v, f"give the full URL of {what} with scheme and host, "
                     "e.g. https://unification.useinsider.com.")
        return v.rstrip("/")

    def hook(self, value: Any) -> str:
        v1_fix = (" Raw Export v1 delivers its file link only to this hook: point it at the "
                  "webhook inbox (python pipelines/webhook.py), e.g. "
                  "\"https://hooks.example.com/insider-hook/<secret>\".")
        if value is None or value == "":
            self.err("hook", value, "Insider requires a webhook URL on every export; give one you "
                     "control with scheme and host, e.g. hook = \"https://example.com/hook\""
                     + (v1_fix if self.v1 else " (this loader polls, so the hook may ignore "
                        "deliveries)."))
            return ""
        v = str(value).strip()
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the path may hold the inbox's secret: show scheme and host only
            self.err("hook", hook_shown(v), "the hook must include a scheme and host (start "
                     "with http:// or https://), e.g. \"https://example.com/insider-hook\"."
                     + (v1_fix if self.v1 else ""))
        elif "ref" in parse_qs(parts.query):
            self.err("hook", hook_shown(v), "remove the 'ref' query parameter: the job adds its "
                     "own to tell deliveries apart.")
        return v

    def choice(self, name: str, value: Any, allowed: tuple[str, ...]) -> str:
        v = str(value)
        if v not in allowed:
            fix = f"use one of {', '.join(repr(a) for a in allowed)}"
            if v.lower() in allowed:
                fix += f" (lowercase: {v.lower()!r})"
            if name == "format" and v.lower() == "json":
                fix += "; Raw Export v2 has no JSON output (v1 has: api_version = \"v1\")"
            self.err(name, value, fix + ".")
        return v

    def positive_int(self, name: str, value: Any) -> int | None:
        if value is None or value == "":
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            n = int(value)
            if str(n) != str(value).strip() and not isinstance(value, int):
                raise ValueError
        except (TypeError, ValueError):
            self.err(name, value, f"{name} is the numeric id shown in InOne, e.g. {name} = 12345.")
            return None
        if n <= 0:
            self.err(name, value, f"{name} must be a positive id, e.g. {name} = 12345.")
            return None
        return n

    def boolean(self, name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.err(name, value, f"{name} is true or false.")
        return False

    def number(self, name: str, value: Any, default: float, *, integer: bool = False,
               positive: bool = False, maximum: float | None = None) -> float:
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool):
                raise ValueError
            n = float(value)
            if integer and n != int(n):
                raise ValueError
        except (TypeError, ValueError):
            kind = "a whole number" if integer else "a number"
            self.err(name, value, f"{name} must be {kind}, e.g. {name} = {default:g}.")
            return default
        if n < 0 or (positive and n == 0) or (maximum is not None and n > maximum):
            bound = f" and at most {maximum:g}" if maximum is not None else ""
            self.err(name, value,
                     f"{name} must be {'greater than 0' if positive else 'at least 0'}{bound}.")
            return default
        return n

    def date(self, name: str, value: Any) -> dt.date | None:
        if value is None or value == "":
            return None
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value).strip())
        except ValueError:
            hint = ""
            if str(value).strip().isdigit():
                hint = " Epoch timestamps are not accepted here."
            self.err(name, value, f"{name} is an ISO date (UTC), e.g. {name} = \"2026-01-01\"."
                     + hint)
            return None

    # -- selectors -----------------------------------------------------------------------------

    def selector(self, where: str, value: Any, kind: str) -> bool:
        if not isinstance(value, str):
            self.err(where, value, f"each {kind} is a string public name, e.g. \"email\".")
            return False
        if SELECTOR_OK(value) or (self.v1 and s.SELECTOR_RE.match(value)):
            return True  # v1 also takes raw c_<name> custom codes
        if value.startswith("c_"):
            fix = (f"raw c_ custom codes are rejected by v2; use the custom. namespace: "
                   f"'custom.{value[2:]}'.")
        elif value != value.lower() and SELECTOR_OK(value.lower()):
            fix = f"public names are lowercase: use {value.lower()!r}."
        elif value == "*":
            fix = "'*' (all attributes) cannot be combined with names: use [\"*\"] alone."
        else:
            fix = (f"use the {kind}'s public name from Insider's Metadata Name Reference (lower "
                   "snake case, custom ones as 'custom.<name>'), not an internal short code.")
        self.err(where, value, fix)
        return False

    def attributes(self, value: Any) -> list[str]:
        value = _maybe_json(value)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value] if value == "*" else value
        if not isinstance(value, list) or not value:
            self.err("attributes", value, 'attributes is a non-empty list of public names, e.g. '
                     '["email", "custom.loyalty_tier"], or ["*"] for all; remove the key for none.')
            return []
        if "*" in value and len(value) > 1:
            self.err("attributes", value,
                     "'*' exports all attributes and cannot be combined with named attributes: "
                     'use ["*"] alone or list names only.')
            return []
        if value == ["*"]:
            return ["*"]
        ok = [self.selector(f"attributes[{i}]", a, "attribute") for i, a in enumerate(value)]
        if len(set(value)) != len(value):
            self.err("attributes", value, "remove the duplicate names.")
        return list(value) if all(ok) else []

    def events(self, value: Any) -> list[dict[str, Any]]:
        value = _maybe_json(value)
        if value is None:
            return []
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not value:
            self.err("events", value, "events is a non-empty list of "
                     '{event_name = "purchase", params = ["product_id"]} tables; '
                     "remove the key to export attributes only.")
            return []
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, ev in enumerate(value):
            w = f"events[{i}]"
            if not isinstance(ev, dict):
                self.err(w, ev, 'each event is a table {event_name = "...", params = [...]}.')
                continue
            unknown = set(ev) - {"event_name", "params", "filters"}
            if unknown:
                self.err(w, sorted(unknown), "an event entry has only event_name, params and "
                         "filters; remove the other keys.")
            name = ev.get("event_name")
            if name is None:
                self.err(f"{w}.event_name", name, "name the event, e.g. event_name = \"purchase\".")
            elif self.selector(f"{w}.event_name", name, "event name"):
                if name in seen:
                    self.err(f"{w}.event_name", name, "list each event once; merge the params.")
                seen.add(name)
            params = _maybe_json(ev.get("params", []))
            if not isinstance(params, list):
                self.err(f"{w}.params", params, 'params is a list of public parameter names, e.g. '
                         '["product_id", "custom.gift_wrap"] (or [] for none).')
                params = []
            for j, p in enumerate(params):
                self.selector(f"{w}.params[{j}]", p, "event parameter")
            filters = _maybe_json(ev.get("filters") or [])
            if not isinstance(filters, list):
                filters = [filters]
            if len(filters) > 1:
                self.err(f"{w}.filters", filters, "Insider allows at most one filter per event; "
                         "keep one and filter the rest in the warehouse.")
            for j, f in enumerate(filters):
                self.filter(f"{w}.filters[{j}]", f)
            out.append({"event_name": name, "params": list(params),
                        **({"filters": filters} if filters else {})})
        return out

    def filter(self, where: str, f: Any) -> None:
        if not isinstance(f, dict):
            self.err(where, f, 'a filter is {key = "currency", operator = "eq", values = ["USD"]}.')
            return
        if "key" not in f:
            self.err(f"{where}.key", None,
                     "name the parameter to filter on, e.g. key = \"currency\".")
        else:
            self.selector(f"{where}.key", f["key"], "event parameter")
        if f.get("operator") not in s.FILTER_OPERATORS:
            self.err(f"{where}.operator", f.get("operator"),
                     f"use one of {', '.join(s.FILTER_OPERATORS)}.")
        has_values, has_url = "values" in f, "values_url" in f
        if has_values == has_url:
            self.err(where, f, "give exactly one of values (an inline list) or values_url "
                     "(a URL of a one-column file), not both and not neither.")
        elif has_values and (not isinstance(f["values"], list) or not f["values"]):
            self.err(f"{where}.values", f["values"], "values is a non-empty list, e.g. [\"USD\"].")
        elif has_url:
            parts = urlsplit(str(f["values_url"]))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.err(f"{where}.values_url", f["values_url"],
                         "values_url is an http(s) URL of a file with one value per row.")


def hook_shown(hook: str) -> str:
    """A hook URL as it may be shown: its path can hold the webhook inbox's secret."""
    parts = urlsplit(hook)
    if not parts.scheme or not parts.netloc:
        return "<hidden>"
    return f"{parts.scheme}://{parts.netloc}/…"


def hook_with_ref(hook: str, ref: str) -> str:
    """The hook URL with ``ref=<ref>`` added: v1 deliveries carry no id, the hook URL does."""
    parts = urlsplit(hook)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"ref": ref})))


def SELECTOR_OK(value: str) -> bool:  # noqa: N802 - reads like a constant predicate
    return bool(s.SELECTOR_RE.match(value)) and not value.startswith("c_")


def _maybe_json(value: Any) -> Any:
    """Env vars carry lists and tables as JSON strings; TOML gives them parsed."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def check_epoch_seconds(name: str, value: int) -> int:
    """Guard the v2 rule that dates are epoch seconds, never milliseconds."""
    if value > s.EPOCH_MS_THRESHOLD:
        raise ConfigError(name, value, "v2 takes epoch seconds; this looks like milliseconds "
                          f"(use {value // 1000}).")
    return value


def build_request_body(cfg: InsiderSettings, window: Window) -> dict[str, Any]:
    """The v2 POST body for one export window."""
    body: dict[str, Any] = {"format": cfg.format, "user_source": cfg.user_source,
                            "hook": cfg.hook}
    if cfg.user_source == "segment":
        segment: dict[str, Any] = {"segment_id": cfg.segment_id}
        if cfg.postfilter_id is not None:
            segment["postfilter"] = {"postfilter_id": cfg.postfilter_id}
        body["segment"] = segment
    if cfg.attributes:
        body["attributes"] = list(cfg.attributes)
    if cfg.events:
        start = check_epoch_seconds("events.start_date", window.start_epoch)
        end = check_epoch_seconds("events.end_date", window.end_epoch)
        if end <= start:
            raise ConfigError("events.end_date", end, "the window must end after it starts.")
        body["events"] = {"start_date": start, "end_date": end,
                          "wanted": [dict(e) for e in cfg.events]}
    if cfg.get_tags:
        body["get_tags"] = True
    return body


def v1_selector(name: str) -> str:
    """A public name as v1 takes it: customs as raw ``c_<name>`` codes."""
    return "c_" + name[len("custom."):] if name.startswith("custom.") else name


def build_v1_body(cfg: InsiderSettings, window: Window, ref: str) -> dict[str, Any]:
    """The v1 POST body for one export window; ``ref`` goes into the hook URL.

    Every wanted event also asks for ``timestamp`` and ``source`` (v2's event base columns), so a
    v1 export loads into the same ``events`` table as a v2 one.
    """
    body: dict[str, Any] = {"segment": {"segment_id": cfg.segment_id}, "format": cfg.format,
                            "hook": hook_with_ref(cfg.hook, ref)}
    if cfg.attributes:
        body["attributes"] = [a if a == "*" else v1_selector(a) for a in cfg.attributes]
    if cfg.events:
        start = check_epoch_seconds("events.start_date", window.start_epoch)
        end = check_epoch_seconds("events.end_date", window.end_epoch)
        wanted = []
        for e in cfg.events:
            params = [v1_selector(p) for p in e.get("params") or []]
            params += [p for p in s.V1_BASE_PARAMS if p not in params]
            entry: dict[str, Any] = {"event_name": e["event_name"], "params": params}
            if e.get("filters"):
                entry["filters"] = [{**f, "key": v1_selector(f["key"])} for f in e["filters"]]
            wanted.append(entry)
        body["events"] = {"start_date": start, "end_date": end, "wanted": wanted}
    return body

