"""Version states, shared by every layer (no third-party imports).

``registered`` -> ``known-good`` by a measured, signed decision; ``quarantined`` and
``compromised`` never load or serve.
"""

from __future__ import annotations

__all__ = ["BAD_STATES", "STATES"]

#: Version states, in DESIGN §7's order; ``quarantined``/``compromised`` never serve.
STATES = ("registered", "known-good", "quarantined", "compromised")
BAD_STATES = ("quarantined", "compromised")
