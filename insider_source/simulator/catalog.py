"""The simulated account's registered names: attributes, events and event parameters.

v2 accepts public names only. A selector is *invalid* when it is malformed (wrong shape, uppercase,
a ``c_`` prefix, an internal short code) and *unknown* when it is well-formed but not registered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
STRING = pa.string()
INT = pa.int64()
FLOAT = pa.float64()
BOOL = pa.bool_()

SELECTOR_RE = re.compile(r"^(custom\.)?[a-z][a-z0-9_]*$")

# Internal short codes (v1 and storage-level names) that v2 rejects as invalid.
INTERNAL_CODES = frozenset({
    "iid", "em", "pid", "na", "ag", "sn", "ph", "gdr", "cty", "ct", "lng", "eo", "cd", "lpd",
    "pn", "up", "cur", "qty", "cid", "dt", "src", "ts", "en", "uid",
})

ATTRIBUTES: tuple[tuple[str, pa.DataType], ...] = (
    ("name", STRING),
    ("surname", STRING),
    ("email", STRING),
    ("phone_number", STRING),
    ("age", INT),
    ("gender", STRING),
    ("country", STRING),
    ("city", STRING),
    ("language", STRING),
    ("email_optin", BOOL),
    ("created_date", TS),
    ("last_purchase_date", TS),
    ("custom.loyalty_tier", STRING),
    ("custom.lifetime_value", FLOAT),
    ("custom.newsletter_opt_in", BOOL),
    ("custom.pet_count", INT),
)

EVENTS: dict[str, tuple[tuple[str, pa.DataType], ...]] = {
    "purchase": (
        ("product_id", STRING),
        ("product_name", STRING),
        ("unit_price", FLOAT),
        ("currency", STRING),
        ("quantity", INT),
        ("custom.gift_wrap", BOOL),
        ("custom.coupon_code", STRING),
    ),
    "item_added_to_cart": (
        ("product_id", STRING),
        ("product_name", STRING),
        ("unit_price", FLOAT),
        ("currency", STRING),
    ),
    "email_open": (
        ("campaign_id", STRING),
        ("custom.campaign_variant", STRING),
    ),
    "session_start": (
        ("device_type", STRING),
        ("custom.app_version", STRING),
    ),
}

# Share of all events per event name (sums to 1).
EVENT_WEIGHTS: dict[str, float] = {
    "session_start": 0.40,
    "item_added_to_cart": 0.25,
    "email_open": 0.20,
    "purchase": 0.15,
}

# Columns every event file has, before the requested parameters (``tags`` goes last).
EVENT_BASE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("insider_id", STRING),
    ("event_name", STRING),
    ("timestamp", TS),
    ("source", STRING),
)


@dataclass(frozen=True)
class Catalog:
    """Registered names and their Arrow types."""

    attributes: dict[str, pa.DataType]
    events: dict[str, dict[str, pa.DataType]]
    internal_codes: frozenset[str]

    @property
    def attribute_names(self) -> list[str]:
        """All registered attribute names, in catalog order (what ``["*"]`` expands to)."""
        return list(self.attributes)

    def is_malformed(self, selector: object) -> bool:
        """True when a selector is not a well-formed public name."""
        if not isinstance(selector, str) or not SELECTOR_RE.match(selector):
            return True
        bare = selector.removeprefix("custom.")
        return bare.startswith("c_") or selector.startswith("c_") or (
            selector in self.internal_codes)

    def param_type(self, event: str, param: str) -> pa.DataType:
        """Arrow type of a registered event parameter."""
        return self.events[event][param]


CATALOG = Catalog(
    attributes=dict(ATTRIBUTES),
    events={name: dict(params) for name, params in EVENTS.items()},
    internal_codes=INTERNAL_CODES,
)


# A typical request over the simulated account's event types (the demo and the benchmarks).
DEMO_EVENTS: list[dict[str, object]] = [
    {"event_name": "purchase",
     "params": ["product_id", "product_name", "unit_price", "currency", "quantity",
                "custom.gift_wrap"]},
    {"event_name": "item_added_to_cart", "params": ["product_id", "unit_price", "currency"]},
    {"event_name": "email_open", "params": ["campaign_id", "custom.campaign_variant"]},
    {"event_name": "session_start", "params": ["device_type"]},
]
