"""The control API under /_emulator: scripted tasks, faults, request counts, Pulse controls."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._api import ApiContext, Handler, Registry
from ._faults import Fault
from ._state import CompiledStep

if TYPE_CHECKING:
    from ._taskcluster_pulse import TaskclusterPulse

__all__ = ["MAX_BULK", "control_routes"]

MAX_BULK = 100_000


class _BadRequest(Exception):
    """A control request that cannot be served; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _explain(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
    return str(exc)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(422, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest(422, "body must be a JSON object")
    return body


def control_routes(registry: Registry) -> list[BaseRoute]:
    """The /_emulator routes (mounted by the app factory) bound to `registry`."""

    def context(request: Request) -> ApiContext:
        name = request.path_params["api"]
        ctx = registry.contexts.get(name)
        if ctx is None:
            known = ", ".join(sorted(registry.contexts))
            raise _BadRequest(404, f"unknown api {name!r} (known: {known})")
        return ctx

    def script_and_extra(
        ctx: ApiContext, body: dict[str, Any]
    ) -> tuple[tuple[CompiledStep, ...], dict[str, Any]]:
        steps = body.pop("steps", None)
        if steps is not None and not isinstance(steps, list):
            raise _BadRequest(422, "steps must be a list of objects")
        try:
            script = ctx.compile_script(steps)
            ctx.check_extra(body)
        except ValueError as exc:
            raise _BadRequest(422, _explain(exc)) from None
        return script, body

    async def create_task(request: Request) -> Response:
        ctx = context(request)
        body = await _json_object(request)
        task_id = body.pop("id", None)
        if task_id is not None and not isinstance(task_id, str):
            raise _BadRequest(422, "id must be a string")
        script, extra = script_and_extra(ctx, body)
        try:
            task = ctx.create(task_id, script, extra)
        except ValueError as exc:
            raise _BadRequest(422, str(exc)) from None
        return JSONResponse({"id": task.id}, status_code=201)

    async def create_bulk(request: Request) -> Response:
        ctx = context(request)
        body = await _json_object(request)
        count = body.pop("count", None)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_BULK:
            raise _BadRequest(422, f"count must be an integer from 0 to {MAX_BULK}")
        script, extra = script_and_extra(ctx, body)
        same = ctx.api.derive_id(extra) if count > 1 else None
        if same is not None:
            raise _BadRequest(422, f"these {count} {ctx.name} tasks would all get the id {same} "
                              "(it derives from their fields): create them one by one")
        ids = [ctx.create(None, script, extra).id for _ in range(count)]
        return JSONResponse({"ids": ids}, status_code=201)

    async def show_task(request: Request) -> Response:
        ctx = context(request)
        task = ctx.tasks.get(ctx.task_key(request.path_params["task_id"]))
        if task is None:
            raise _BadRequest(404, "unknown task")
        view = task.peek()
        return JSONResponse(
            {
                "id": task.id,
                "step": view.step,
                "steps": len(task.steps),
                "fields": dict(view.fields),
                "extra": task.extra,
            }
        )

    async def add_fault(request: Request) -> Response:
        body = await _json_object(request)
        try:
            fault = Fault.model_validate(body)
        except ValidationError as exc:
            raise _BadRequest(422, _explain(exc)) from None
        ctx = registry.contexts.get(fault.api)
        if ctx is None:
            raise _BadRequest(404, f"unknown api {fault.api!r}")
        if fault.task_id is not None:
            fault = fault.model_copy(update={"task_id": ctx.task_key(fault.task_id)})
        fault_id = registry.faults.add(fault)
        return JSONResponse({"id": fault_id, **fault.model_dump()}, status_code=201)

    async def list_faults(request: Request) -> Response:
        return JSONResponse({"faults": registry.faults.pending()})

    async def clear_faults(request: Request) -> Response:
        registry.faults.clear()
        return JSONResponse({"faults": []})

    async def read_requests(request: Request) -> Response:
        return JSONResponse(registry.counter.snapshot())

    async def clear_requests(request: Request) -> Response:
        registry.counter.clear()
        return JSONResponse(registry.counter.snapshot())

    async def reset(request: Request) -> Response:
        registry.reset()
        return JSONResponse({"reset": True})

    def pulse_of() -> TaskclusterPulse:
        if registry.pulse is None:
            raise _BadRequest(409, "this emulator publishes no Pulse messages "
                              "(start it with --pulse URL, or pulse_url=...)")
        return registry.pulse

    async def pulse_status(request: Request) -> Response:
        return JSONResponse(pulse_of().publisher.stats())

    def pulse_control(action: str) -> Handler:
        async def handler(request: Request) -> Response:
            pulse = pulse_of()
            body = await _json_object(request)
            count = body.pop("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BULK:
                raise _BadRequest(422, f"count must be an integer from 1 to {MAX_BULK}")
            exchange, task_id = body.pop("exchange", None), body.pop("taskId", None)
            if body:
                raise _BadRequest(422, f"unknown fields {sorted(body)}: use count, exchange, "
                                  "taskId")
            if not isinstance(exchange, str | None) or not isinstance(task_id, str | None):
                raise _BadRequest(422, "exchange and taskId must be strings")
            try:
                control = pulse.control(action, count, exchange=exchange, task_id=task_id)
            except ValueError as exc:
                raise _BadRequest(422, str(exc)) from None
            return JSONResponse(control, status_code=201)

        return handler

    async def read_changes(request: Request) -> Response:
        raw = request.query_params.get("since", "0")
        if not raw.isdigit():
            raise _BadRequest(422, "since must be a non-negative integer")
        since = int(raw)
        changes = pulse_of().changes(since)
        return JSONResponse({"changes": changes, "next": changes[-1]["seq"] if changes else since})

    async def index(request: Request) -> Response:
        return JSONResponse({"apis": sorted(registry.contexts)})

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _BadRequest as exc:
                return _error(exc.status, exc.message)

        return endpoint

    table: list[tuple[str, Handler, list[str]]] = [
        ("/", index, ["GET"]),
        ("/reset", reset, ["POST"]),
        ("/faults", add_fault, ["POST"]),
        ("/faults", list_faults, ["GET"]),
        ("/faults", clear_faults, ["DELETE"]),
        ("/requests", read_requests, ["GET"]),
        ("/requests", clear_requests, ["DELETE"]),
        ("/pulse", pulse_status, ["GET"]),
        ("/pulse/drop", pulse_control("drop"), ["POST"]),
        ("/pulse/duplicate", pulse_control("duplicate"), ["POST"]),
        ("/pulse/reorder", pulse_control("reorder"), ["POST"]),
        ("/changes", read_changes, ["GET"]),
        ("/{api}/tasks", create_task, ["POST"]),
        ("/{api}/tasks/bulk", create_bulk, ["POST"]),
        ("/{api}/tasks/{task_id}", show_task, ["GET"]),
    ]
    return [Route(path, guarded(handler), methods=methods) for path, handler, methods in table]
