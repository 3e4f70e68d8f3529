"""One backend per task API; each only translates its API into the shared model."""

from ._base import Backend, Reading, TaskRef, TransientFault
from .cloudcoin import CloudCoinBackend, CloudCoinTask

__all__ = [
    "Backend",
    "CloudCoinBackend",
    "CloudCoinTask",
    "Reading",
    "TaskRef",
    "TransientFault",
]
