"""Watches shared past one process: relays poll and publish to Redis Streams, readers follow.

``Relay`` runs in a few watcher processes, with the backends' credentials; ``RelayBackend`` is
what every application process observes through. Needs the ``relay`` extra (``redis>=5``).
"""

from ._reader import RelayBackend
from ._relay import Relay

__all__ = ["Relay", "RelayBackend"]
