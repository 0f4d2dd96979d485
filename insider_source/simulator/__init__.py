"""A local simulator of Insider One's Raw Export v2 and v1 APIs, served over real HTTP on 127.0.0.1.

``Simulator`` runs the server (v2 export/status, v1 export with webhook delivery, signed
storage); ``Faults`` switches failures on; ``CATALOG`` lists the simulated account's registered
attributes, events and event parameters. See ``server.py`` and ``v1.py`` for the contracts.
"""

from __future__ import annotations

from insider_source.simulator.catalog import CATALOG, DEMO_EVENTS
from insider_source.simulator.server import Faults, Simulator

__all__ = ["CATALOG", "DEMO_EVENTS", "Faults", "Simulator"]
