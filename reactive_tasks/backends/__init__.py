"""One backend per task API; each only translates its API into the shared model."""

from .._errors import (
    ArtifactError,
    ArtifactNotFound,
    InvalidArtifactName,
    NoTaskResult,
    ResultNotOnIpfs,
    TaskNotClaimable,
    TransactionFailed,
    TransactionReverted,
    TransientFault,
)
from ._base import Backend, Reading, TaskRef
from .aparavi import AparaviApiError, AparaviBackend, AparaviStatus, AparaviTask
from .cloudcoin import CloudCoinBackend, CloudCoinTask
from .greencloud import (
    GreenCloudBackend,
    GreenCloudCapabilities,
    GreenCloudCsvRow,
    GreenCloudListEntry,
    GreenCloudRecord,
    GreenCloudTask,
)
from .iexec import IExecBackend, IExecDeal, IExecDealEvent, IExecTask
from .taskcluster import (
    TaskclusterArtifact,
    TaskclusterBackend,
    TaskclusterCredentials,
    TaskclusterGroupMember,
    TaskclusterRun,
    TaskclusterStatus,
    TaskclusterTaskDefinition,
)

__all__ = [
    "AparaviApiError",
    "AparaviBackend",
    "AparaviStatus",
    "AparaviTask",
    "ArtifactError",
    "ArtifactNotFound",
    "Backend",
    "CloudCoinBackend",
    "CloudCoinTask",
    "GreenCloudBackend",
    "GreenCloudCapabilities",
    "GreenCloudCsvRow",
    "GreenCloudListEntry",
    "GreenCloudRecord",
    "GreenCloudTask",
    "IExecBackend",
    "IExecDeal",
    "IExecDealEvent",
    "IExecTask",
    "InvalidArtifactName",
    "NoTaskResult",
    "Reading",
    "ResultNotOnIpfs",
    "TaskNotClaimable",
    "TaskRef",
    "TaskclusterArtifact",
    "TaskclusterBackend",
    "TaskclusterCredentials",
    "TaskclusterGroupMember",
    "TaskclusterRun",
    "TaskclusterStatus",
    "TaskclusterTaskDefinition",
    "TransactionFailed",
    "TransactionReverted",
    "TransientFault",
]
