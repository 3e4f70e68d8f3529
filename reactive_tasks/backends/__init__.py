"""One backend per task API; each only translates its API into the shared model."""

from ._base import Backend, Reading, TaskRef, TransientFault
from .cloudcoin import CloudCoinBackend, CloudCoinTask
from .greencloud import (
    GreenCloudBackend,
    GreenCloudCapabilities,
    GreenCloudCsvRow,
    GreenCloudListEntry,
    GreenCloudRecord,
    GreenCloudTask,
)

__all__ = [
    "Backend",
    "CloudCoinBackend",
    "CloudCoinTask",
    "GreenCloudBackend",
    "GreenCloudCapabilities",
    "GreenCloudCsvRow",
    "GreenCloudListEntry",
    "GreenCloudRecord",
    "GreenCloudTask",
    "Reading",
    "TaskRef",
    "TransientFault",
]
