"""Task results: the archive of a completed task, downloaded from the IPFS gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ..._errors import NoTaskResult, ResultNotOnIpfs

if TYPE_CHECKING:
    from ._source import IExecBackend

class ResultDownload:
    """``IExecBackend.fetch_results``."""

    async def fetch_results(self, task_id: str) -> bytes:
        """Download a completed task's result archive from the IPFS gateway, like the SDK's
        ``fetchResults``.

        Raises ``NoTaskResult`` when the task is not completed or has no result,
        ``ResultNotOnIpfs`` when it is stored elsewhere; gateway faults raise
        ``BackendUnavailable`` (5xx, 429, network) or ``ProtocolError`` (any other status).
        """
        return await _fetch_results(cast("IExecBackend", self), task_id)  # the only host


async def _fetch_results(backend: IExecBackend, task_id: str) -> bytes:
    """The download; the gateway is another origin: the session sends it no RPC headers."""
    task = (await backend.status(task_id)).snapshot
    shown, name = task.taskid, backend.name
    if task.statusName != "COMPLETED":
        raise NoTaskResult(
            f"the task is not completed ({task.statusName})", backend=name, task_id=shown
        )
    storage, location = task.results.storage, task.results.location
    if storage == "none":
        raise NoTaskResult("no result uploaded for this task", backend=name, task_id=shown)
    if storage != "ipfs":
        raise ResultNotOnIpfs(
            f"the result is stored on {storage[:40]!r}, download not supported",
            backend=name,
            task_id=shown,
        )
    if not location or "://" in location or ".." in location:
        raise ResultNotOnIpfs(
            "the result has no usable IPFS location", backend=name, task_id=shown
        )
    url = backend.ipfs_gateway + (location if location.startswith("/") else "/" + location)
    response = await backend.session().request("GET", url, task_id=shown)
    if response.status_code != 200:
        raise backend.protocol_error(
            f"the IPFS gateway answered HTTP {response.status_code} for {location[:80]}", shown
        )
    return response.content
