"""Deterministic synthetic users and events, vectorized with numpy and pyarrow.

- A user is an index ``0 <= i < users``. Every attribute of user ``i`` is a pure function of
  ``(seed, i)`` (a splitmix64 hash), so any subset of users can be generated in any order.
- The events of one UTC day and one event name are a pure function of ``(seed, day, event name,
  users, events_per_user_day)``: two exports whose windows share a day serve identical events
  for it. They are generated in blocks of ``EVENT_BLOCK_ROWS`` rows, each with its own RNG, so
  memory stays bounded by one block whatever the volume.
- Late-arriving events (``World.late``) are extra batches for a past day, each a pure function of
  ``(seed, day, batch number)``; they follow the day's regular events.

No function here loops over rows in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from insider_source.simulator.catalog import CATALOG, EVENT_WEIGHTS, TS

EVENT_BLOCK_ROWS = 1 << 18
USER_BLOCK_ROWS = 1 << 16
DAY_SECONDS = 86_400
_COUNT_STREAM = 1 << 30
_LATE_STREAM = 1 << 20
_LATE_SPLIT = 1 << 29

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


# -- hashing helpers --------------------------------------------------------------------------


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _hash(base: np.ndarray, salt: int) -> np.ndarray:
    return mix64(base ^ mix64(np.array([salt], dtype=np.uint64)))


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _choice(u: np.ndarray, weights: list[float]) -> np.ndarray:
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(weights) - 1)


def _pick(values: pa.Array, idx: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    return values.take(pa.array(idx.astype(np.int64), mask=null))


def _hex_ids(a: np.ndarray, b: np.ndarray) -> pa.Array:
    """32 lowercase hex characters per row from two uint64 arrays."""
    n = len(a)
    raw = np.stack([a, b], axis=1).astype(">u8").view(np.uint8).reshape(n, 16)
    data = np.ascontiguousarray(_HEX[raw]).tobytes()
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _int_str(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64)).cast(pa.string())


# -- users ------------------------------------------------------------------------------------

_FIRST = ["Ayşe", "Mehmet", "Emma", "Liam", "Sofía", "Lukas", "Chloé", "Noah", "Zeynep",
          "Olivia", "Mia", "Jonas", "Léa", "Mateo", "Hannah", "Yuki", "Aarav", "Fatima",
          "Björn", "Ana"]
_FIRST_ASCII = ["ayse", "mehmet", "emma", "liam", "sofia", "lukas", "chloe", "noah", "zeynep",
                "olivia", "mia", "jonas", "lea", "mateo", "hannah", "yuki", "aarav", "fatima",
                "bjorn", "ana"]
_LAST = ["Yılmaz", "Müller", "Smith", "O'Brien", "García", "Dubois", "Kaya", "Johnson",
         "Schmidt", "Brown", "Martin", "Demir", "Rossi", "Tanaka", "Nowak", "Silva"]
_LAST_ASCII = ["yilmaz", "muller", "smith", "obrien", "garcia", "dubois", "kaya", "johnson",
               "schmidt", "brown", "martin", "demir", "rossi", "tanaka", "nowak", "silva"]
_DOMAINS = ["example.com", "mail.example.org", "inbox.example.net"]
# country, calling code, language, share, cities
_COUNTRIES: list[tuple[str, str, str, float, list[str]]] = [
    ("United States", "1", "en", 0.35, ["New York", "Washington, D.C.", "Austin"]),
    ("Germany", "49", "de", 0.2, ["Berlin", "München", "Köln"]),
    ("Türkiye", "90", "tr", 0.2, ["İstanbul", "Ankara", "İzmir"]),
    ("United Kingdom", "44", "en", 0.15, ["London", "Manchester"]),
    ("France", "33", "fr", 0.1, ["Paris", "Lyon"]),
]
_GENDERS = ["female", "male", "non_binary"]
_TIERS = ["bronze", "silver", "gold", "platinum"]
_CREATED_FROM = int(dt.datetime(2019, 1, 1, tzinfo=dt.UTC).timestamp())
_CREATED_TO = int(dt.datetime(2025, 12, 31, tzinfo=dt.UTC).timestamp())
_PURCHASE_TO = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp())

_A_FIRST, _A_FIRST_ASCII = pa.array(_FIRST), pa.array(_FIRST_ASCII)
_A_LAST, _A_LAST_ASCII = pa.array(_LAST), pa.array(_LAST_ASCII)
_A_DOMAINS = pa.array(_DOMAINS)
_A_COUNTRY = pa.array([c[0] for c in _COUNTRIES])
_A_CODE = pa.array([c[1] for c in _COUNTRIES])
_A_LANG = pa.array([c[2] for c in _COUNTRIES])
_A_CITY = pa.array([city for c in _COUNTRIES for city in c[4]])
_CITY_OFFSET = np.cumsum([0] + [len(c[4]) for c in _COUNTRIES[:-1]])
_CITY_COUNT = np.array([len(c[4]) for c in _COUNTRIES])
_A_GENDER, _A_TIER = pa.array(_GENDERS), pa.array(_TIERS)


def user_base(seed: int, idx: np.ndarray) -> np.ndarray:
    """Per-user base hash for ``(seed, index)``."""
    return mix64(idx.astype(np.uint64) ^ mix64(np.array([seed], dtype=np.uint64)))


def insider_ids(seed: int, idx: np.ndarray) -> pa.Array:
    """The ``insider_id`` (32 hex characters) of each user index."""
    base = user_base(seed, idx)
    return _hex_ids(_hash(base, 1), _hash(base, 2))


def user_attributes(seed: int, idx: np.ndarray) -> dict[str, pa.Array]:
    """``insider_id`` and every catalog attribute for the given user indices, typed."""
    base = user_base(seed, idx)

    def u(salt: int) -> np.ndarray:
        return _unit(_hash(base, salt))

    def null(salt: int, rate: float) -> np.ndarray:
        return u(salt) < rate

    first = (u(10) * len(_FIRST)).astype(np.int64)
    last = (u(11) * len(_LAST)).astype(np.int64)
    country = _choice(u(12), [c[3] for c in _COUNTRIES])
    city = _CITY_OFFSET[country] + (u(13) * _CITY_COUNT[country]).astype(np.int64)
    created = _CREATED_FROM + (u(14) * (_CREATED_TO - _CREATED_FROM)).astype(np.int64)
    last_purchase = created + (u(15) * (_PURCHASE_TO - created)).astype(np.int64)
    email = pc.binary_join_element_wise(
        _pick(_A_FIRST_ASCII, first), pa.scalar("."), _pick(_A_LAST_ASCII, last),
        _int_str(idx), pa.scalar("@"), _pick(_A_DOMAINS, (u(16) * len(_DOMAINS)).astype(int)),
        "")
    email = pc.if_else(pa.array(null(17, 0.02)), pa.scalar(None, pa.string()), email)
    phone_digits = _int_str(2_000_000_000 + (u(18) * 7_000_000_000).astype(np.int64))
    phone = pc.binary_join_element_wise(
        pa.scalar("+"), _pick(_A_CODE, country), pa.scalar(" "), phone_digits, "")
    phone = pc.if_else(pa.array(null(19, 0.10)), pa.scalar(None, pa.string()), phone)
    ltv = np.round(u(20) * 4000.0, 2)
    ltv = np.where(u(21) < 0.05, np.floor(ltv), ltv)  # some whole values, e.g. 120.0
    cols: dict[str, pa.Array] = {
        "insider_id": _hex_ids(_hash(base, 1), _hash(base, 2)),
        "name": _pick(_A_FIRST, first),
        "surname": _pick(_A_LAST, last, null(22, 0.03)),
        "email": email,
        "phone_number": phone,
        "age": pa.array(18 + (u(23) * 63).astype(np.int64), mask=null(24, 0.08)),
        "gender": _pick(_A_GENDER, _choice(u(25), [0.48, 0.47, 0.05]), null(26, 0.06)),
        "country": _pick(_A_COUNTRY, country),
        "city": _pick(_A_CITY, city, null(27, 0.03)),
        "language": _pick(_A_LANG, country),
        "email_optin": pa.array(u(28) < 0.6, mask=null(29, 0.05)),
        "created_date": pa.array(created * 1_000_000, type=TS),
        "last_purchase_date": pa.array(last_purchase * 1_000_000, type=TS,
                                       mask=null(30, 0.30)),
        "custom.loyalty_tier": _pick(_A_TIER, _choice(u(31), [0.4, 0.3, 0.2, 0.1]),
                                     null(32, 0.15)),
        "custom.lifetime_value": pa.array(ltv, mask=null(33, 0.10)),
        "custom.newsletter_opt_in": pa.array(u(34) < 0.4, mask=null(35, 0.10)),
        "custom.pet_count": pa.array((u(36) * 5).astype(np.int64), mask=null(37, 0.25)),
    }
    return cols


def postfilter_keep(seed: int, idx: np.ndarray, postfilter_id: int) -> np.ndarray:
    """Users kept by a saved post-filter: a deterministic ~80 % of the segment."""
    keep: np.ndarray = (_hash(user_base(seed, idx), 1000 + postfilter_id) % np.uint64(5)) != 0
    return keep


# -- events -----------------------------------------------------------------------------------

_N_PRODUCTS = 200
_ADJ = ["Classic", "Eco", "Deluxe", "Mini", "Pro", "Vintage", "Smart", "Cozy", "Urban", "Sport"]
_NOUNS = ["T-Shirt", 'Mug "Barista"', "Sneakers", "Backpack", "Lamp", "Headphones",
          "Notebook, A5", "Water Bottle", "Scarf", "Desk Chair", "Sunglasses", "Candle",
          "Phone Case", "Yoga Mat", "Teapot", "Wallet", "Umbrella", "Board Game", "Jacket",
          "Plant Pot"]
_PRODUCT_IDS = pa.array([f"P{i:05d}" for i in range(_N_PRODUCTS)])
_PRODUCT_NAMES = pa.array([f"{_ADJ[i % len(_ADJ)]} {_NOUNS[(i // len(_ADJ)) % len(_NOUNS)]}"
                           for i in range(_N_PRODUCTS)])
_price_rng = np.random.default_rng(20260301)
_PRICES = np.round(np.round(_price_rng.uniform(3, 300, _N_PRODUCTS))
                   - _price_rng.choice([0.0, 0.01, 0.5, 0.05], _N_PRODUCTS), 2)
_CURRENCIES = pa.array(["USD", "EUR", "TRY", "GBP"])
_COUPONS = pa.array(["SAVE10", "WELCOME", "SPRING25", "VIP-2026"])
_CAMPAIGNS = pa.array([f"cmp-{i:04d}" for i in range(1, 41)])
_VARIANTS = pa.array(["A", "B", "control"])
_DEVICES = pa.array(["desktop", "mobile", "tablet"])
_APP_VERSIONS = pa.array(["4.2.0", "4.2.1", "4.3.0", "5.0.0-beta"])
_SOURCES = pa.array(["web", "ios", "android"])
_TAGS = pa.array(['["sale"]', '["vip","newsletter"]', "[]", '["spring, 2026","mobile"]',
                  '["loyal"]'])
EVENT_NAMES = list(CATALOG.events)


def _event_params(rng: np.random.Generator, event: str, m: int) -> dict[str, pa.Array]:
    def nulls(rate: float) -> np.ndarray:
        return rng.random(m) < rate

    if event in ("purchase", "item_added_to_cart"):
        product = rng.integers(0, _N_PRODUCTS, m)
        cols: dict[str, pa.Array] = {
            "product_id": _pick(_PRODUCT_IDS, product),
            "product_name": _pick(_PRODUCT_NAMES, product),
            "unit_price": pa.array(_PRICES[product], mask=nulls(0.01)),
            "currency": _pick(_CURRENCIES, _choice(rng.random(m), [0.5, 0.25, 0.15, 0.1])),
        }
        if event == "purchase":
            cols["quantity"] = pa.array(rng.integers(1, 6, m), mask=nulls(0.02))
            cols["custom.gift_wrap"] = pa.array(rng.random(m) < 0.2, mask=nulls(0.15))
            cols["custom.coupon_code"] = _pick(_COUPONS, rng.integers(0, len(_COUPONS), m),
                                               nulls(0.7))
        return cols
    if event == "email_open":
        return {
            "campaign_id": _pick(_CAMPAIGNS, rng.integers(0, len(_CAMPAIGNS), m)),
            "custom.campaign_variant": _pick(_VARIANTS, rng.integers(0, 3, m), nulls(0.1)),
        }
    return {
        "device_type": _pick(_DEVICES, _choice(rng.random(m), [0.45, 0.45, 0.1]), nulls(0.05)),
        "custom.app_version": _pick(_APP_VERSIONS, rng.integers(0, 4, m), nulls(0.2)),
    }


@dataclass
class EventBlock:
    """Generated events: every column of the event (typed) and the user index of each row."""

    columns: dict[str, pa.Array]
    uidx: np.ndarray
    seconds: np.ndarray  # epoch seconds of each row

    def __len__(self) -> int:
        return len(self.uidx)

    def filter(self, mask: np.ndarray) -> EventBlock:
        """Keep the rows where ``mask`` is true."""
        pmask = pa.array(mask)
        return EventBlock({k: pc.filter(v, pmask) for k, v in self.columns.items()},
                          self.uidx[mask], self.seconds[mask])


@dataclass
class World:
    """The data of one simulated account, as an export sees it (fixed at submission)."""

    seed: int
    users: int
    events_per_user_day: float
    late: dict[dt.date, tuple[int, ...]] = field(default_factory=dict)  # day → batch sizes

    def attributes(self, idx: np.ndarray) -> dict[str, pa.Array]:
        """All attributes of the given user indices."""
        return user_attributes(self.seed, idx)

    def day_count(self, day: dt.date, event: str) -> int:
        """How many regular events of ``event`` exist on ``day``."""
        e = EVENT_NAMES.index(event)
        rng = np.random.default_rng([self.seed, day.toordinal(), e, _COUNT_STREAM])
        return int(rng.poisson(self.users * self.events_per_user_day * EVENT_WEIGHTS[event]))

    def events(self, day: dt.date, event: str) -> Iterator[EventBlock]:
        """The events of one UTC day and event name, block by block (regular, then late)."""
        e = EVENT_NAMES.index(event)
        n = self.day_count(day, event) if self.users > 0 else 0
        for b in range(-(-n // EVENT_BLOCK_ROWS)):
            m = min(EVENT_BLOCK_ROWS, n - b * EVENT_BLOCK_ROWS)
            rng = np.random.default_rng([self.seed, day.toordinal(), e, b])
            yield self._block(rng, m, day, event)
        for k, total in enumerate(self.late.get(day, ()) if self.users > 0 else ()):
            split = np.random.default_rng([self.seed, day.toordinal(), _LATE_SPLIT, k])
            m = int(split.multinomial(total, [EVENT_WEIGHTS[x] for x in EVENT_NAMES])[e])
            if m:
                rng = np.random.default_rng([self.seed, day.toordinal(), e, _LATE_STREAM + k])
                yield self._block(rng, m, day, event)

    def _block(self, rng: np.random.Generator, m: int, day: dt.date, event: str) -> EventBlock:
        # Activity is skewed: low user indices are more active.
        uidx = np.minimum((rng.random(m) ** 2 * self.users).astype(np.int64), self.users - 1)
        start = (day.toordinal() - dt.date(1970, 1, 1).toordinal()) * DAY_SECONDS
        seconds = start + np.sort(rng.integers(0, DAY_SECONDS, m))
        cols: dict[str, pa.Array] = {
            "insider_id": insider_ids(self.seed, uidx),
            "event_name": pa.repeat(pa.scalar(event), m),
            "timestamp": pa.array(seconds * 1_000_000, type=TS),
            "source": _pick(_SOURCES, _choice(rng.random(m), [0.55, 0.25, 0.2])),
            "tags": _pick(_TAGS, rng.integers(0, len(_TAGS), m), rng.random(m) < 0.1),
        }
        cols.update(_event_params(rng, event, m))
        return EventBlock(cols, uidx, seconds)
