"""A small synchronous client of the control API, for tests, demos and users' own test suites."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from ._state import Step, step_to_json

__all__ = ["EmulatorClient", "EmulatorError"]


class EmulatorError(Exception):
    """The control API refused a request (unknown API, invalid body ...)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"emulator answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message


class EmulatorClient:
    """Creates scripted tasks, injects faults and reads request counts of a running emulator."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def api_url(self, api: str) -> str:
        """The base URL of one emulated API, e.g. http://127.0.0.1:54321/cloudcoin."""
        return f"{self.url}/{api}"

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self._http.request(method, f"/_emulator{path}", json=body)
        if response.is_error:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            raise EmulatorError(response.status_code, message)
        return response.json()

    @staticmethod
    def _script(steps: Sequence[Step | Mapping[str, Any]] | None) -> dict[str, Any]:
        return {} if steps is None else {"steps": [step_to_json(step) for step in steps]}

    def create_task(
        self,
        api: str,
        steps: Sequence[Step | Mapping[str, Any]] | None = None,
        id: str | None = None,
        **extra: Any,
    ) -> str:
        """Create one scripted task (the API's default script when `steps` is None); its id."""
        body = {**extra, **self._script(steps)}
        if id is not None:
            body["id"] = id
        result: str = self._call("POST", f"/{api}/tasks", body)["id"]
        return result

    def create_tasks(
        self,
        api: str,
        count: int,
        steps: Sequence[Step | Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> list[str]:
        """Create `count` tasks sharing one script in a single request; their ids."""
        body = {**extra, **self._script(steps), "count": count}
        ids: list[str] = self._call("POST", f"/{api}/tasks/bulk", body)["ids"]
        return ids

    def task(self, api: str, task_id: str) -> dict[str, Any]:
        """Where a task is in its script (step index, fields), without counting a poll."""
        result: dict[str, Any] = self._call("GET", f"/{api}/tasks/{task_id}")
        return result

    def inject_fault(self, api: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Queue a fault (see Fault for the fields); returns it with its id."""
        result: dict[str, Any] = self._call("POST", "/faults", {**fields, "api": api, "kind": kind})
        return result

    def faults(self) -> list[dict[str, Any]]:
        """The faults still pending, with their remaining uses."""
        result: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return result

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._call("DELETE", "/faults")

    def requests(self) -> dict[str, Any]:
        """Request counts: total, by_api, by_route ("api METHOD /path"), by_task."""
        result: dict[str, Any] = self._call("GET", "/requests")
        return result

    def reset_requests(self) -> None:
        """Zero the request counts."""
        self._call("DELETE", "/requests")

    def pulse(self) -> dict[str, Any]:
        """The Pulse publisher: broker (no credentials), connected, counts, pending controls."""
        result: dict[str, Any] = self._call("GET", "/pulse")
        return result

    def _pulse_control(
        self, action: str, count: int, exchange: str | None, task_id: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"count": count}
        if exchange is not None:
            body["exchange"] = exchange
        if task_id is not None:
            body["taskId"] = task_id
        result: dict[str, Any] = self._call("POST", f"/pulse/{action}", body)
        return result

    def drop_messages(
        self, count: int = 1, *, exchange: str | None = None, task_id: str | None = None
    ) -> dict[str, Any]:
        """Publish none of the next `count` Pulse messages (of `exchange`, of `task_id`)."""
        return self._pulse_control("drop", count, exchange, task_id)

    def duplicate_messages(
        self, count: int = 1, *, exchange: str | None = None, task_id: str | None = None
    ) -> dict[str, Any]:
        """Publish each of the next `count` Pulse messages twice in a row."""
        return self._pulse_control("duplicate", count, exchange, task_id)

    def reorder_messages(
        self, count: int = 1, *, exchange: str | None = None, task_id: str | None = None
    ) -> dict[str, Any]:
        """Swap the next two Pulse messages (`count` times): the first goes out after the second."""
        return self._pulse_control("reorder", count, exchange, task_id)

    def changes(self, since: int = 0) -> list[dict[str, Any]]:
        """Every Pulse-visible change after `since`: seq, at (unix time), exchange, taskId..."""
        result: list[dict[str, Any]] = self._call("GET", f"/changes?since={since}")["changes"]
        return result

    def reset(self) -> None:
        """Forget all tasks, faults and counts."""
        self._call("POST", "/reset")

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmulatorClient({self.url!r})"
