"""One backend per task API; each only translates its API into the shared model."""

from ._base import Backend, Reading, TaskRef, TransientFault
from .aparavi import AparaviApiError, AparaviBackend, AparaviStatus, AparaviTask
from .cloudcoin import CloudCoinBackend, CloudCoinTask

__all__ = [
    "AparaviApiError",
    "AparaviBackend",
    "AparaviStatus",
    "AparaviTask",
    "Backend",
    "CloudCoinBackend",
    "CloudCoinTask",
    "Reading",
    "TaskRef",
    "TransientFault",
]
