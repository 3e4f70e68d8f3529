"""The plug-in point for emulated APIs: what an API module declares, and what it gets back.

An API module builds an `EmulatedApi` whose `routes(ctx)` returns Starlette routes; `ctx.route`
wraps a handler with the shared request counting and fault injection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ._faults import Fault, FaultQueue, fault_response
from ._requests import RequestCounter
from ._state import CompiledStep, ScriptedTask, Step, TaskStore, compile_steps

if TYPE_CHECKING:
    from ._taskcluster_pulse import TaskclusterPulse

__all__ = ["ApiContext", "EmulatedApi", "Handler", "Registry", "check_choice"]

Handler = Callable[[Request], Awaitable[Response]]


def check_choice(
    field: str, value: Any, valid: Iterable[str], *, ignore_case: bool = False
) -> str | None:
    """None when `value` is one of `valid`; else a message naming the bad value and the good ones.

    Scripted statuses are checked when a task is created, so a typo is refused there (422)
    instead of surfacing later as a watcher's ProtocolError.
    """
    choices = sorted(valid)
    if isinstance(value, str):
        wanted = value.lower() if ignore_case else value
        if wanted in ({c.lower() for c in choices} if ignore_case else choices):
            return None
    return f"{field} must be one of {', '.join(choices)}; got {value!r}"


def _same_id(raw: str) -> str | None:
    return raw


def _accept(_: Mapping[str, Any]) -> str | None:
    return None


def _no_derived_id(_: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class EmulatedApi:
    """One emulated API: its name (URL prefix), routes and the hooks the shared parts call.

    `normalize_id` returns the canonical id or None when malformed; `check_step` / `check_extra`
    return an error message for a bad step's fields / bad creation extras, or None when fine;
    `api_error` builds the answer of an `api_error` fault; `derive_id` gives the id a task
    created without one must have given its extras (None: a fresh `new_task_id()`).
    """

    name: str
    routes: Callable[[ApiContext], Sequence[BaseRoute]]
    new_task_id: Callable[[], str]
    default_steps: tuple[Mapping[str, Any], ...]
    api_error: Callable[[Fault], Response]
    normalize_id: Callable[[str], str | None] = _same_id
    check_step: Callable[[Mapping[str, Any]], str | None] = _accept
    check_extra: Callable[[Mapping[str, Any]], str | None] = _accept
    derive_id: Callable[[Mapping[str, Any]], str | None] = _no_derived_id


class ApiContext:
    """What an API module's routes use: its task store plus the shared faults and counts."""

    def __init__(
        self, api: EmulatedApi, tasks: TaskStore, faults: FaultQueue, counter: RequestCounter
    ) -> None:
        self.api = api
        self.name = api.name
        self.tasks = tasks
        self._faults = faults
        self._counter = counter

    def task_key(self, raw: str) -> str:
        """The canonical form of a task id, or the raw text when it is malformed."""
        return self.api.normalize_id(raw) or raw

    async def guard(
        self, request: Request, route: str, task_ids: Sequence[str] = ()
    ) -> Response | None:
        """Count the request and apply a matching fault: its answer, or None to serve normally."""
        self._counter.record(self.name, route, task_ids)
        fault = self._faults.take(self.name, request.scope["path"], task_ids)
        if fault is None:
            return None
        return await fault_response(fault, self.api.api_error)

    def route(
        self,
        path: str,
        handler: Handler,
        *,
        methods: Iterable[str] = ("GET",),
        task_param: str | None = "id",
    ) -> Route:
        """A route serving `handler` behind `guard`; the task id comes from path `task_param`.

        Counted as "<api> <METHOD> <path>". Handlers whose task ids are elsewhere (a body, a
        query) build their own Route and call `guard` themselves.
        """
        methods = list(methods)
        label = f"{self.name} {','.join(methods)} {path}"

        async def endpoint(request: Request) -> Response:
            ids: tuple[str, ...] = ()
            if task_param is not None:
                raw = request.path_params.get(task_param)
                if raw is not None:
                    ids = (self.task_key(raw),)
            early = await self.guard(request, label, ids)
            if early is not None:
                return early
            return await handler(request)

        return Route(path, endpoint, methods=methods)

    def compile_script(
        self, steps: Sequence[Step | Mapping[str, Any]] | None
    ) -> tuple[CompiledStep, ...]:
        """Validate a script (the API's default when None); raises ValueError when invalid."""
        compiled = compile_steps(self.api.default_steps if steps is None else steps)
        for index, step in enumerate(compiled):
            problem = self.api.check_step(step.fields)
            if problem:
                raise ValueError(f"steps[{index}]: {problem}")
        return compiled

    def check_extra(self, extra: Mapping[str, Any]) -> None:
        """Raise ValueError when the creation extras are not valid for this API."""
        problem = self.api.check_extra(extra)
        if problem:
            raise ValueError(problem)

    def create(
        self, task_id: str | None, script: tuple[CompiledStep, ...], extra: Mapping[str, Any]
    ) -> ScriptedTask:
        """Store a scripted task under a canonical id (a fresh one when None)."""
        if task_id is None:
            key = self.api.derive_id(extra) or self.api.new_task_id()
        else:
            normal = self.api.normalize_id(task_id)
            if normal is None:
                raise ValueError(f"{task_id!r} is not a valid {self.name} task id")
            key = normal
        return self.tasks.add(key, script, extra)


class Registry:
    """All emulated APIs of one app with their shared fault queue and request counts."""

    def __init__(self, apis: Iterable[EmulatedApi]) -> None:
        self.faults = FaultQueue()
        self.counter = RequestCounter()
        self.contexts: dict[str, ApiContext] = {}
        #: Set when the app publishes Taskcluster's Pulse messages (`create_app(pulse_url=...)`).
        self.pulse: TaskclusterPulse | None = None
        for api in apis:
            if api.name in self.contexts:
                raise ValueError(f"API {api.name!r} registered twice")
            self.contexts[api.name] = ApiContext(api, TaskStore(), self.faults, self.counter)

    def reset(self) -> None:
        """Forget all tasks, faults and counts."""
        for ctx in self.contexts.values():
            ctx.tasks.clear()
        self.faults.clear()
        self.counter.clear()
        if self.pulse is not None:
            self.pulse.reset()
