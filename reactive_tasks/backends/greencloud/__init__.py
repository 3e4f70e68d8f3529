"""GreenCloud (``https://api.greencloud.dev``): submit function tasks, watch them, read results.

``_source`` is the observation path (models, id rule, one list request per round, the reading),
``_auth`` the bearer token hook, ``_calls`` submit/record/result, ``_csv`` the per-function CSV.
"""

from __future__ import annotations

from . import _calls, _csv
from ._csv import GreenCloudCsvRow
from ._source import (
    GreenCloudCapabilities,
    GreenCloudListEntry,
    GreenCloudRecord,
    GreenCloudSource,
    GreenCloudTask,
)

__all__ = [
    "GreenCloudBackend",
    "GreenCloudCapabilities",
    "GreenCloudCsvRow",
    "GreenCloudListEntry",
    "GreenCloudRecord",
    "GreenCloudTask",
]


class GreenCloudBackend(GreenCloudSource):
    """Submits and watches GreenCloud tasks; give exactly one of ``token`` and ``api_key``.

    The observation and its options are ``GreenCloudSource``'s; the calls beside it are
    ``submit``, ``record``, ``result`` and ``tasks_csv``.
    """

    submit = _calls.submit
    record = _calls.record
    result = _calls.result
    tasks_csv = _csv.tasks_csv
