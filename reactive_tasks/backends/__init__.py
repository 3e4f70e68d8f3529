"""One backend per task API; each only translates its API into the shared model."""

from ._base import Backend, Reading, TaskRef, TransientFault
from .cloudcoin import CloudCoinBackend, CloudCoinTask
from .iexec import IExecBackend, IExecDeal, IExecDealEvent, IExecTask, NoTaskResult, ResultNotOnIpfs

__all__ = [
    "Backend",
    "CloudCoinBackend",
    "CloudCoinTask",
    "IExecBackend",
    "IExecDeal",
    "IExecDealEvent",
    "IExecTask",
    "NoTaskResult",
    "Reading",
    "ResultNotOnIpfs",
    "TaskRef",
    "TransientFault",
]
