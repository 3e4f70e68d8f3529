"""Local, real-HTTP emulators of the task APIs, with scripted tasks, faults and request counts.

Each API is served under its own prefix (e.g. /cloudcoin); the control API is under /_emulator.
"""

from __future__ import annotations

from ._app import create_app
from ._client import EmulatorClient, EmulatorError
from ._faults import Fault
from ._server import EmulatorServer
from ._state import Step

__all__ = ["EmulatorClient", "EmulatorError", "EmulatorServer", "Fault", "Step", "create_app"]
