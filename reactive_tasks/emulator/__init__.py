"""Local, real-HTTP emulators of the task APIs, with scripted tasks, faults and request counts.

Each API is served under its own prefix (e.g. /cloudcoin); the control API is under /_emulator.
The names below load on first use, so the pytest plugin beside them costs nothing until used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._client import EmulatorClient, EmulatorError
    from ._faults import Fault
    from ._server import EmulatorServer
    from ._state import Step

__all__ = ["EmulatorClient", "EmulatorError", "EmulatorServer", "Fault", "Step", "create_app"]

#: Public name -> the private module defining it.
_HOMES = {
    "EmulatorClient": "._client",
    "EmulatorError": "._client",
    "EmulatorServer": "._server",
    "Fault": "._faults",
    "Step": "._state",
    "create_app": "._app",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
