"""iExec: tasks of the PoCo hub contract over Ethereum JSON-RPC, with the SDK's semantics.

``_source`` is the observation path (task model, id rule, batch request, reading); deals,
results, claims (and their signer), chain presets, JSON-RPC and ABI helpers live in their own
modules beside it.
"""

from ..._errors import (
    NoTaskResult,
    ResultNotOnIpfs,
    TaskNotClaimable,
    TransactionFailed,
    TransactionReverted,
)
from ._chains import CHAINS, DEFAULT_IPFS_GATEWAY, IExecChain
from ._deals import DealEventKind as DealEventKind
from ._deals import IExecDeal, IExecDealEvent, IExecResource
from ._signer import IExecSigner
from ._source import COMPLETED as COMPLETED
from ._source import FAILED as FAILED
from ._source import STATUS_NAMES, IExecBackend, IExecTask, IExecTaskResults
from ._source import StatusName as StatusName

__all__ = [
    "CHAINS",
    "DEFAULT_IPFS_GATEWAY",
    "STATUS_NAMES",
    "IExecBackend",
    "IExecChain",
    "IExecDeal",
    "IExecDealEvent",
    "IExecResource",
    "IExecSigner",
    "IExecTask",
    "IExecTaskResults",
    "NoTaskResult",
    "ResultNotOnIpfs",
    "TaskNotClaimable",
    "TransactionFailed",
    "TransactionReverted",
]
