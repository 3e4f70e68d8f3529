"""iExec: tasks of the PoCo hub contract over Ethereum JSON-RPC, with the SDK's semantics.

``_source`` is the observation path (task model, id rule, batch request, reading); deals,
results, chain presets, JSON-RPC and ABI helpers live in their own modules beside it.
"""

from ..._errors import NoTaskResult, ResultNotOnIpfs
from ._chains import CHAINS, DEFAULT_IPFS_GATEWAY, IExecChain
from ._deals import DealEventKind as DealEventKind
from ._deals import IExecDeal, IExecDealEvent, IExecResource
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
    "IExecTask",
    "IExecTaskResults",
    "NoTaskResult",
    "ResultNotOnIpfs",
]
