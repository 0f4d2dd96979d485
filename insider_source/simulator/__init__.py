"""A local simulator of Insider One's Raw Export v2 API, served over real HTTP on 127.0.0.1.

``Simulator`` runs the server; ``Faults`` switches failures on; ``CATALOG`` lists the simulated
account's registered attributes, events and event parameters.
"""

from __future__ import annotations

from insider_source.simulator.catalog import CATALOG, DEMO_EVENTS
from insider_source.simulator.server import Faults, Simulator

__all__ = ["CATALOG", "DEMO_EVENTS", "Faults", "Simulator"]
