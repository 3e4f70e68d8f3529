"""The backends a relay can serve, by name: their id rules and snapshot models, without secrets.

An application process validates ids with the backend class's own rule before writing anything
to Redis, so it builds a credential-free instance of that class (never used for requests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, get_args

from .._errors import ConfigurationError
from .._models import TaskEvent
from ..backends import (
    AparaviBackend,
    Backend,
    CloudCoinBackend,
    GreenCloudBackend,
    IExecBackend,
    TaskclusterBackend,
)

__all__ = ["BACKEND_NAMES", "check_name", "event_model", "validator"]

_PLACEHOLDER_URL = "http://relay.invalid"
_FACTORIES: dict[str, Callable[[], Backend[Any]]] = {
    "aparavi": lambda: AparaviBackend(_PLACEHOLDER_URL, api_key="relay-reader"),
    "cloudcoin": lambda: CloudCoinBackend(_PLACEHOLDER_URL),
    "greencloud": lambda: GreenCloudBackend(_PLACEHOLDER_URL, api_key="relay-reader"),
    "iexec": lambda: IExecBackend(_PLACEHOLDER_URL, "0x" + "0" * 40),
    "taskcluster": lambda: TaskclusterBackend(_PLACEHOLDER_URL),
}
_CLASSES: dict[str, type[Backend[Any]]] = {
    "aparavi": AparaviBackend,
    "cloudcoin": CloudCoinBackend,
    "greencloud": GreenCloudBackend,
    "iexec": IExecBackend,
    "taskcluster": TaskclusterBackend,
}
BACKEND_NAMES = tuple(sorted(_FACTORIES))

_lock = threading.Lock()
_validators: dict[str, Backend[Any]] = {}


def check_name(name: object) -> str:
    """``name`` if a relay can serve it, else ``ConfigurationError``."""
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ConfigurationError(
            f"unknown backend name {name!r}; choose from {', '.join(BACKEND_NAMES)}"
        )
    return name


def validator(name: str) -> Backend[Any]:
    """A credential-free instance of backend ``name``, used only for its id rules."""
    check_name(name)
    with _lock:
        instance = _validators.get(name)
        if instance is None:
            instance = _validators[name] = _FACTORIES[name]()
        return instance


def event_model(name: str) -> type[TaskEvent[Any]]:
    """``TaskEvent`` parametrised with backend ``name``'s snapshot model."""
    cls = _CLASSES[check_name(name)]
    for base in getattr(cls, "__orig_bases__", ()):
        args = get_args(base)
        if args:
            model: type[TaskEvent[Any]] = TaskEvent[args[0]]  # type: ignore[valid-type]
            return model
    raise ConfigurationError(f"{cls.__name__} does not name its snapshot model")
