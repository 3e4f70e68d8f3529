"""Aparavi Data Toolchain (DTC): start a pipeline task, watch it, cancel it.

The observation path is ``_source``; the two answer shapes are read by ``_envelope``; starting
and cancelling (sent once, never retried) live in ``_actions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _actions
from ._envelope import AparaviApiError
from ._source import AparaviSource, AparaviStatus, AparaviTask, TaskType

__all__ = ["AparaviApiError", "AparaviBackend", "AparaviStatus", "AparaviTask", "TaskType"]


class AparaviBackend(AparaviSource):
    """Starts, watches and cancels Aparavi DTC tasks (default ``https://eaas.aparavi.com``).

    The API key goes in the ``Authorization`` header as is, or as ``Bearer <key>`` with
    ``bearer=True`` (what Aparavi's Python SDK sends); the service accepts both.
    """

    async def start(
        self,
        pipeline: Mapping[str, Any],
        name: str | None = None,
        threads: int | None = None,
    ) -> AparaviTask:
        """Start a task running ``pipeline`` (``PUT /task``); its token and compute pool.

        ``pipeline`` is the pipeline definition, or a whole ``{"pipeline": {...}}`` body. Never
        retried: a transient fault raises ``BackendUnavailable``, and the task may then exist.
        """
        return await _actions.start(self, pipeline, name, threads)

    async def cancel(
        self, task_id: str | AparaviTask, *, task_type: str | None = None
    ) -> AparaviStatus:
        """Tear the task down (``DELETE /task``) and return its final results.

        Sent once: a transient fault raises ``BackendUnavailable``.
        """
        return await _actions.cancel(self, self._ref(task_id, task_type))
