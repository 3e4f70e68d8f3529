"""Request counts per API, per route and per task, read and reset through the control API."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["RequestCounter"]


class RequestCounter:
    """Counts every request served by an emulated API route (faulted ones included)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._by_api: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()
        self._by_task: Counter[str] = Counter()

    def record(self, api: str, route: str, task_ids: Sequence[str]) -> None:
        """Count one request to `route` of `api` touching `task_ids`."""
        with self._lock:
            self._total += 1
            self._by_api[api] += 1
            self._by_route[route] += 1
            for task_id in task_ids:
                self._by_task[task_id] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts as the control API reports them."""
        with self._lock:
            return {
                "total": self._total,
                "by_api": dict(self._by_api),
                "by_route": dict(self._by_route),
                "by_task": dict(self._by_task),
            }

    def clear(self) -> None:
        """Reset every count to zero."""
        with self._lock:
            self._total = 0
            self._by_api.clear()
            self._by_route.clear()
            self._by_task.clear()
