"""Artifacts of a run: the paged listing, and downloads through the queue's redirect."""

from __future__ import annotations

from datetime import datetime
from os import PathLike
from pathlib import Path
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict

from ..._errors import ArtifactError, ArtifactNotFound, BackendUnavailable, InvalidArtifactName
from ..._reply import HttpReply
from ._listing import Page, pages
from ._source import TaskclusterSource, _ErrorBody

_MAX_ARTIFACT_NAME = 1024


class TaskclusterArtifact(BaseModel):
    """One artifact of a run, as listed by ``.../artifacts``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    storageType: str
    name: str
    expires: datetime
    contentType: str


class _ArtifactPage(Page):
    artifacts: list[TaskclusterArtifact]


async def list_artifacts(
    backend: TaskclusterSource, task_id: str, run_id: int | None
) -> list[TaskclusterArtifact]:
    """The artifacts of a run (the latest when ``run_id`` is None), all pages."""
    tid = backend.validate_task_id(task_id)
    url = f"{backend._queue}/task/{tid}{_run_path(run_id)}/artifacts"
    found: list[TaskclusterArtifact] = []
    async for page in pages(backend, url, tid, _ArtifactPage, "task or run"):
        found.extend(page.artifacts)
    return found


async def fetch_artifact(
    backend: TaskclusterSource,
    task_id: str,
    name: str,
    run_id: int | None,
    dest: str | PathLike[str] | None,
) -> bytes | Path:
    """An artifact's content as bytes, or streamed into the file ``dest``.

    The queue redirects to the storage location; the session follows it, sending the storage
    host no Hawk header (the location carries its own signature).
    """
    tid = backend.validate_task_id(task_id)
    url = f"{backend._queue}/task/{tid}{_run_path(run_id)}/artifacts/{_artifact_path(name)}"
    session = backend.session()
    if dest is None:
        reply = await session.request("GET", url, task_id=tid, follow_redirects=True)
        if reply.status_code != 200:
            _artifact_failure(backend, reply, tid, name)
        return reply.content
    response = await session.request("GET", url, task_id=tid, stream=True, follow_redirects=True)
    if response.status_code != 200:
        await response.aread()
        await response.aclose()
        whole = HttpReply(response.status_code, response.headers, response.content)
        _artifact_failure(backend, whole, tid, name)
    target = Path(dest)
    try:
        with target.open("wb") as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
    except httpx.TransportError as exc:
        raise BackendUnavailable(
            f"the download broke off: {exc or type(exc).__name__}",
            backend=backend.name,
            task_id=tid,
        ) from exc
    finally:
        await response.aclose()
    return target


def _artifact_failure(
    backend: TaskclusterSource, response: HttpReply, task_id: str, name: str
) -> None:
    code = response.status_code
    text = backend._explain(response)
    if code == 404:
        raise ArtifactNotFound(f"{text} (artifact {name!r})", backend=backend.name, task_id=task_id)
    if code == 424 or response.headers.get("x-taskcluster-artifact-storage-type") == "error":
        try:
            reason = _ErrorBody.model_validate_json(response.content).reason or ""
        except ValueError:
            reason = ""
        raise ArtifactError(
            f"{text} (artifact {name!r})", backend=backend.name, task_id=task_id, reason=reason
        )
    raise backend.protocol_error(f"artifact {name!r}: unexpected {text}", task_id)


def _artifact_path(name: str) -> str:
    """``name`` checked and percent-encoded segment by segment, to follow ``.../artifacts/``.

    An artifact name is a relative ``/``-separated path: an absolute name, an empty, ``.`` or
    ``..`` segment, or a control character could reach another endpoint of the queue.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArtifactName("an artifact name is a non-empty string")
    if len(name) > _MAX_ARTIFACT_NAME:
        raise InvalidArtifactName(f"an artifact name has at most {_MAX_ARTIFACT_NAME} characters")
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments) or any(
        ord(c) < 0x20 or c in "\\\x7f" for c in name
    ):
        raise InvalidArtifactName(
            f"an artifact name is a relative path without empty, '.' or '..' segments, "
            f"backslashes or control characters, got {name[:100]!r}"
        )
    return "/".join(quote(segment, safe="") for segment in segments)


def _run_path(run_id: int | None) -> str:
    if run_id is None:
        return ""
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 0:
        raise ValueError(f"a run id is a non-negative integer, got {run_id!r}")
    return f"/runs/{run_id}"
