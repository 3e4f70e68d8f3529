"""The app factory: every emulated API under its own prefix, plus the control API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount

from . import aparavi, cloudcoin, greencloud, iexec, taskcluster
from ._api import EmulatedApi, Registry
from ._control import control_routes
from ._faults import install_reset_log_filter

if TYPE_CHECKING:
    from ._taskcluster_pulse import TaskclusterPulse

__all__ = ["APIS", "create_app"]

# One line per emulated API: its module's `API`.
APIS: tuple[EmulatedApi, ...] = (
    cloudcoin.API, aparavi.API, taskcluster.API, greencloud.API, iexec.API
)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal Server Error"
    return JSONResponse({"error": detail}, status_code=status)


def create_app(
    apis: Iterable[EmulatedApi] | None = None, *, pulse_url: str | None = None
) -> Starlette:
    """A Starlette app serving `apis` (default: all of APIS) and /_emulator.

    The shared state is at `app.state.emulator` (a `Registry`). With `pulse_url` (an AMQP URL),
    the Taskcluster emulator publishes Pulse messages there and its tasks advance on a clock;
    the publisher's thread starts here and ends with `app.state.emulator.pulse.close()`.
    """
    registry = Registry(APIS if apis is None else apis)
    if pulse_url is not None:
        registry.pulse = _start_pulse(registry, pulse_url)
    routes: list[BaseRoute] = [Mount("/_emulator", routes=control_routes(registry))]
    for name, ctx in registry.contexts.items():
        routes.append(Mount(f"/{name}", routes=list(ctx.api.routes(ctx))))
    install_reset_log_filter()
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.emulator = registry
    return app


def _start_pulse(registry: Registry, url: str) -> TaskclusterPulse:
    from ._pulse import PulsePublisher
    from ._taskcluster_pulse import EXCHANGE_PREFIX, EXCHANGES, TaskclusterPulse

    ctx = registry.contexts.get("taskcluster")
    if ctx is None:
        raise ValueError("pulse_url needs the taskcluster API among the emulated APIs")
    publisher = PulsePublisher(url, [EXCHANGE_PREFIX + name for name in EXCHANGES])
    pulse = TaskclusterPulse(ctx, publisher)
    publisher.start()
    return pulse
