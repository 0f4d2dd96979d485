"""Validation of [sources.insider] before any network call, mirroring v2's 400 rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from insider_source.config import InsiderSettings, build_request_body, load_settings
from insider_source.exceptions import ConfigError, ConfigErrors, MissingSettings
from insider_source.window import Window

BASE: dict[str, Any] = {
    "partner_name": "mybrand",
    "request_token": "tok-123",
    "hook": "https://example.com/hook",
    "segment_id": 12345,
    "attributes": ["name", "email", "age", "custom.loyalty_tier"],
}


def settings(**changes: Any) -> InsiderSettings:
    raw = {**BASE, **changes}
    return InsiderSettings.from_raw({k: v for k, v in raw.items() if v is not None})


def test_valid_minimal_settings_and_defaults() -> None:
    cfg = settings()
    assert cfg.format == "parquet"
    assert cfg.user_source == "segment"
    assert cfg.base_url == "https://unification.useinsider.com"
    assert cfg.lookback_days == 2
    assert "tok-123" not in repr(cfg) and "tok-123" not in repr(cfg.request_token)
    assert cfg.request_token.reveal() == "tok-123"


BAD = [
    ({"partner_name": "MyBrand"}, "partner_name", "'mybrand'"),
    ({"format": "json"}, "format", "no JSON"),
    ({"format": "CSV"}, "format", "lowercase"),
    ({"user_source": "everyone"}, "user_source", "'segment', 'events'"),
    ({"segment_id": None}, "segment_id", "segment_id = 12345"),
    ({"segment_id": "abc"}, "segment_id", "numeric id"),
    ({"segment_id": -4}, "segment_id", "positive"),
    ({"attributes": ["*", "email"]}, "attributes", "alone"),
    ({"attributes": ["c_loyalty_tier"]}, "attributes[0]", "'custom.loyalty_tier'"),
    ({"attributes": ["Email"]}, "attributes[0]", "'email'"),
    ({"attributes": ["em"]}, None, None),  # a short code is well-formed: the server says unknown
    ({"attributes": ["custom..x"]}, "attributes[0]", "public name"),
    ({"attributes": []}, "attributes", "non-empty"),
    ({"attributes": "email"}, "attributes", "non-empty list"),
    ({"hook": "example.com/hook"}, "hook", "scheme and host"),
    ({"hook": None}, "hook", "requires a webhook"),
    ({"base_url": "ftp://x"}, "base_url", "scheme and host"),
    ({"events": []}, "events", "non-empty"),
    ({"events": [{"event_name": "Purchase", "params": []}]}, "events[0].event_name", "'purchase'"),
    ({"events": [{"event_name": "purchase", "params": ["c_gift"]}]}, "events[0].params[0]",
     "custom.gift"),
    ({"events": [{"event_name": "purchase", "params": [],
                  "filters": [{"key": "currency", "operator": "eq", "values": ["USD"]},
                              {"key": "currency", "operator": "ne", "values": ["EUR"]}]}]},
     "events[0].filters", "at most one filter"),
    ({"events": [{"event_name": "purchase", "params": [],
                  "filters": [{"key": "currency", "operator": "eq", "values": ["USD"],
                               "values_url": "https://x/y.csv"}]}]},
     "events[0].filters[0]", "exactly one of values"),
    ({"events": [{"event_name": "purchase", "params": [],
                  "filters": [{"key": "currency", "operator": "like", "values": ["USD"]}]}]},
     "events[0].filters[0].operator", "eq, ne, lt, gt, lteq, gteq"),
    ({"events": [{"event_name": "purchase", "params": [], "where": 1}]}, "events[0]",
     "only event_name, params and filters"),
    ({"user_source": "events", "events": [{"event_name": "purchase", "params": []}]},
     "segment_id", "mutually exclusive"),
    ({"user_source": "events", "segment_id": None}, "events", "needs at least one event"),
    ({"initial_start_date": "1730000000000"}, "initial_start_date", "Epoch timestamps"),
    ({"initial_start_date": "03/01/2026"}, "initial_start_date", "ISO date"),
    ({"lookback_days": -1}, "lookback_days", "at least 0"),
    ({"lookback_days": 1.5}, "lookback_days", "whole number"),
    ({"poll_interval_seconds": 0}, "poll_interval_seconds", "greater than 0"),
    ({"get_tags": "yes"}, "get_tags", "true or false"),
]


@pytest.mark.parametrize("changes,field,fix", BAD)
def test_bad_setting_names_field_value_and_fix(changes: dict[str, Any], field: str | None,
                                               fix: str | None) -> None:
    if field is None:
        settings(**changes)  # accepted locally
        return
    with pytest.raises(ConfigError) as ei:
        settings(**changes)
    err = ei.value
    errors = err.errors if isinstance(err, ConfigErrors) else [err]
    hit = [e for e in errors if e.field == field]
    assert hit, f"no error for {field}: {err}"
    assert fix in str(hit[0])
    assert err.exit_code == 2


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigErrors) as ei:
        settings(partner_name="ACME", format="xml", hook="nope")
    assert {e.field for e in ei.value.errors} == {"partner_name", "format", "hook"}


def test_missing_credentials_say_where_to_put_them() -> None:
    with pytest.raises(MissingSettings) as ei:
        InsiderSettings.from_raw({"hook": "https://x.io/h"})
    msg = str(ei.value)
    assert "partner_name" in msg and "request_token" in msg
    assert "SOURCES__INSIDER__REQUEST_TOKEN" in msg and ".dlt/secrets.toml" in msg
    assert ei.value.exit_code == 2


def test_settings_resolve_from_env_vars_with_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SOURCES__INSIDER__PARTNER_NAME": "acme",
        "SOURCES__INSIDER__REQUEST_TOKEN": "secret-xyz",
        "SOURCES__INSIDER__HOOK": "https://acme.example/hook",
        "SOURCES__INSIDER__FORMAT": "csv",
        "SOURCES__INSIDER__USER_SOURCE": "events",
        "SOURCES__INSIDER__EVENTS": '[{"event_name": "purchase", "params": ["currency"],'
                                    ' "filters": [{"key": "currency", "operator": "eq",'
                                    ' "values": ["USD"]}]}]',
        "SOURCES__INSIDER__ATTRIBUTES": '["email", "custom.loyalty_tier"]',
        "SOURCES__INSIDER__GET_TAGS": "true",
        "SOURCES__INSIDER__INITIAL_START_DATE": "2026-01-01",
        "SOURCES__INSIDER__LOOKBACK_DAYS": "3",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = load_settings()
    assert cfg.partner_name == "acme" and cfg.format == "csv"
    assert cfg.events[0]["filters"][0]["values"] == ["USD"]
    assert cfg.attributes == ["email", "custom.loyalty_tier"]
    assert cfg.get_tags is True
    assert cfg.initial_start_date == dt.date(2026, 1, 1)
    assert cfg.lookback_days == 3


def test_request_body_matches_v2_shape() -> None:
    cfg = settings(postfilter_id=678, get_tags=True,
                   events=[{"event_name": "purchase", "params": ["product_id", "currency"]}])
    w = Window(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
    body = build_request_body(cfg, w)
    assert body == {
        "format": "parquet",
        "user_source": "segment",
        "hook": "https://example.com/hook",
        "segment": {"segment_id": 12345, "postfilter": {"postfilter_id": 678}},
        "attributes": ["name", "email", "age", "custom.loyalty_tier"],
        "events": {"start_date": 1767225600, "end_date": 1767398400,
                   "wanted": [{"event_name": "purchase", "params": ["product_id", "currency"]}]},
        "get_tags": True,
    }


def test_events_user_source_body_has_no_segment() -> None:
    cfg = settings(user_source="events", segment_id=None, attributes=None,
                   events=[{"event_name": "purchase", "params": []}])
    w = Window(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    body = build_request_body(cfg, w)
    assert "segment" not in body and "attributes" not in body
    assert body["user_source"] == "events"


# -- Raw Export v1 ---------------------------------------------------------------------------

V1_EVENTS = [{"event_name": "purchase", "params": ["product_id", "custom.gift_wrap"],
              "filters": [{"key": "custom.gift_wrap", "operator": "eq", "values": [True]}]},
             {"event_name": "session_start", "params": ["timestamp"]}]

BAD_V1 = [
    ({"user_source": "events", "segment_id": None, "events": V1_EVENTS}, "user_source",
     "segment only"),
    ({"postfilter_id": 7}, "postfilter_id", "no post-filters"),
    ({"get_tags": True}, "get_tags", "no tags"),
    ({"format": "xml"}, "format", "'json'"),
    ({"hook": "ftp://example.com/h"}, "hook", "http:// or https://"),
    ({"hook": None}, "hook", "webhook inbox"),
    ({"hook": "https://example.com/h?ref=x"}, "hook", "'ref'"),
    ({"segment_id": None}, "segment_id", "segment"),
    ({"events": [{"event_name": "purchase", "params": [],
                  "filters": [{"key": "a", "operator": "eq", "values": [1]},
                              {"key": "b", "operator": "eq", "values": [2]}]}]},
     "events[0].filters", "at most one filter"),
    ({"events": [{"event_name": "purchase", "params": [],
                  "filters": [{"key": "a", "operator": "like", "values": [1]}]}]},
     "events[0].filters[0].operator", "eq, ne, lt, gt, lteq, gteq"),
    ({"events": [{"event_name": "purchase", "params": [],
                  "filters": [{"key": "a", "operator": "eq", "values": [1],
                               "values_url": "https://x.example/v.txt"}]}]},
     "events[0].filters[0]", "exactly one of values"),
]


@pytest.mark.parametrize("changes,field,fix", BAD_V1)
def test_bad_v1_setting_names_field_and_fix(changes: dict[str, Any], field: str,
                                            fix: str) -> None:
    with pytest.raises(ConfigError) as e:
        settings(api_version="v1", **changes)
    err = e.value
    errors = err.errors if isinstance(err, ConfigErrors) else [err]
    assert any(x.field == field and fix in str(x) for x in errors), str(err)


def test_v1_hook_errors_never_show_the_hooks_path() -> None:
    with pytest.raises(ConfigError) as e:
        settings(api_version="v1", hook="https:///insider-hook/Sup3rS3cretPathSegment")
    assert "Sup3rS3cretPathSegment" not in str(e.value)


def test_v1_accepts_json_and_c_custom_codes_that_v2_rejects() -> None:
    cfg = settings(api_version="v1", format="json", attributes=["email", "c_loyalty_tier"])
    assert (cfg.api_version, cfg.format) == ("v1", "json")
    with pytest.raises(ConfigError):
        settings(format="json")
    with pytest.raises(ConfigError):
        settings(attributes=["email", "c_loyalty_tier"])


def test_v1_body_uses_c_codes_base_params_and_a_ref_in_the_hook() -> None:
    from insider_source.config import build_v1_body

    cfg = settings(api_version="v1", format="csv", events=V1_EVENTS,
                   hook="https://hooks.example.com/insider-hook/s3cret?x=1")
    window = Window(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 3, tzinfo=dt.UTC))
    body = build_v1_body(cfg, window, "v1-20260301-abcd")
    assert body["segment"] == {"segment_id": 12345}
    assert body["format"] == "csv"
    assert body["hook"] == "https://hooks.example.com/insider-hook/s3cret?x=1&ref=v1-20260301-abcd"
    assert body["attributes"] == ["name", "email", "age", "c_loyalty_tier"]
    assert body["events"]["start_date"] == 1772323200
    assert body["events"]["end_date"] == 1772496000
    purchase, session = body["events"]["wanted"]
    assert purchase["params"] == ["product_id", "c_gift_wrap", "timestamp", "source"]
    assert purchase["filters"] == [{"key": "c_gift_wrap", "operator": "eq", "values": [True]}]
    assert session["params"] == ["timestamp", "source"]
    assert "user_source" not in body and "get_tags" not in body
