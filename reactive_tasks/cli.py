"""The ``reactive-tasks`` command: ``watch`` real tasks, run the ``demo``, serve ``emulate``,
share watches across processes with ``relay``.

Exit codes of ``watch`` and ``demo``: 0 when every task completed, 1 when any failed, was
cancelled or timed out, 2 on a monitoring error (or bad arguments), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from reactivex import Observable

from ._aio import aiter
from ._errors import ReactiveTasksError
from ._models import TaskEvent, TaskState
from ._policy import PollPolicy
from .backends import (
    AparaviBackend,
    Backend,
    CloudCoinBackend,
    GreenCloudBackend,
    IExecBackend,
    TaskclusterBackend,
)

__all__ = ["main"]

EXIT_OK, EXIT_TASK_FAILED, EXIT_MONITORING_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_EMULATOR_PORT = 8765


# -- building backends from arguments ------------------------------------------------------


def _secret(args: argparse.Namespace, option: str) -> str | None:
    """A secret read from the environment variable named by ``--<option>-env``."""
    name = getattr(args, option.replace("-", "_") + "_env", None)
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"reactive-tasks: environment variable {name} is not set")
    return value


Watcher = tuple[Backend[Any], Callable[[str], Observable[TaskEvent[Any]]]]


def _cloudcoin(args: argparse.Namespace) -> Watcher:
    backend = CloudCoinBackend(args.base_url or "http://localhost:8004", policy=args.policy)
    return backend, backend.observe


def _aparavi(args: argparse.Namespace) -> Watcher:
    key = _secret(args, "api-key") or _secret(args, "token")
    if key is None:
        raise SystemExit("reactive-tasks: aparavi needs --api-key-env NAME")
    if not args.task_type:
        raise SystemExit("reactive-tasks: aparavi needs --task-type cpu|gpu")
    backend = AparaviBackend(
        args.base_url or "https://eaas.aparavi.com", api_key=key, policy=args.policy
    )
    return backend, lambda token: backend.observe(token, task_type=args.task_type)


def _taskcluster(args: argparse.Namespace) -> Watcher:
    root_url = args.root_url or os.environ.get("TASKCLUSTER_ROOT_URL")
    if not root_url:
        raise SystemExit("reactive-tasks: taskcluster needs --root-url (or TASKCLUSTER_ROOT_URL)")
    # The official client's environment variables; --token-env names another for the token.
    token = _secret(args, "token") or os.environ.get("TASKCLUSTER_ACCESS_TOKEN")
    client_id = os.environ.get("TASKCLUSTER_CLIENT_ID")
    credentials = None
    if token and client_id:
        credentials = {"clientId": client_id, "accessToken": token}
    elif token:
        raise SystemExit("reactive-tasks: an access token needs TASKCLUSTER_CLIENT_ID too")
    backend = TaskclusterBackend(root_url, credentials=credentials, policy=args.policy)
    return backend, backend.observe


def _greencloud(args: argparse.Namespace) -> Watcher:
    token, key = _secret(args, "token"), _secret(args, "api-key")
    if (token is None) == (key is None):
        raise SystemExit("reactive-tasks: greencloud needs one of --token-env or --api-key-env")
    backend = GreenCloudBackend(
        args.base_url or "https://api.greencloud.dev", token=token, api_key=key,
        policy=args.policy,
    )
    return backend, backend.observe


def _iexec(args: argparse.Namespace) -> Watcher:
    if args.chain:
        overrides = {"rpc_url": args.rpc_url} if args.rpc_url else {}
        backend = IExecBackend.for_chain(args.chain, policy=args.policy, **overrides)
    elif args.rpc_url and args.hub:
        backend = IExecBackend(args.rpc_url, args.hub, policy=args.policy)
    else:
        raise SystemExit("reactive-tasks: iexec needs --chain NAME, or --rpc-url and --hub")
    return backend, lambda task_id: backend.observe(task_id, deal_id=args.deal_id)


#: Backend name -> (backend, observe one id) from parsed arguments.
BACKEND_FACTORIES: dict[str, Callable[[argparse.Namespace], Watcher]] = {
    "aparavi": _aparavi,
    "cloudcoin": _cloudcoin,
    "greencloud": _greencloud,
    "iexec": _iexec,
    "taskcluster": _taskcluster,
}


# -- rendering -----------------------------------------------------------------------------


@dataclass
class _Row:
    backend: str
    task_id: str
    label: str = ""
    started: float = field(default_factory=time.monotonic)
    event: TaskEvent[Any] | None = None
    ended: float | None = None
    error: str | None = None


class _Board:
    """The state of every watched task, rendered as a rich table or as JSON lines."""

    def __init__(self, rows: Sequence[_Row], *, as_json: bool, out: TextIO) -> None:
        self.rows = {(r.backend, r.task_id): r for r in rows}
        self.as_json = as_json
        self.out = out
        self._live: Any = None

    def __enter__(self) -> _Board:
        if not self.as_json:
            try:
                from rich.live import Live
            except ImportError:  # the cli extra is not installed: plain lines instead
                return self
            self._live = Live(
                self.render(), auto_refresh=False, transient=False, vertical_overflow="visible"
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.__exit__(None, None, None)

    def update(self, event: TaskEvent[Any]) -> None:
        row = self.rows.get((event.backend, event.task_id))
        if row is None:
            row = _Row(event.backend, event.task_id, label=_short(event.task_id))
            self.rows[(event.backend, event.task_id)] = row
        row.event = event
        if event.state.terminal:
            row.ended = time.monotonic()
        if self.as_json:
            self.out.write(json.dumps(event.model_dump(mode="json"), default=str) + "\n")
            self.out.flush()
        elif self._live is None:
            progress = "" if event.progress is None else f" {event.progress:5.1f}%"
            self.out.write(f"{event.backend} {event.task_id} {event.state.value}{progress}"
                           f" {event.message or ''}\n".rstrip() + "\n")
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    def render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(expand=False)
        widths = {"backend": 11, "task": 21, "state": 9, "progress": 16, "elapsed": 8}
        for column in ("backend", "task", "state", "progress", "elapsed", "message"):
            table.add_column(
                column, no_wrap=True, overflow="ellipsis", min_width=widths.get(column)
            )
        now = time.monotonic()
        colours = {TaskState.COMPLETED: "green", TaskState.FAILED: "red",
                   TaskState.CANCELLED: "yellow", TaskState.TIMED_OUT: "magenta"}
        for row in self.rows.values():
            event = row.event
            state = "waiting" if event is None else event.state.value
            if row.error:
                state = "ERROR"
            colour = "red" if row.error else colours.get(event.state, "cyan") if event else "dim"
            progress: Any = ""
            if event is not None and event.progress is not None:
                progress = ProgressBar(total=100, completed=event.progress, width=16)
            elif event is not None and event.state.terminal:
                progress = ProgressBar(total=100, completed=100, width=16)
            elapsed = (row.ended or now) - row.started
            message = row.error or (event.message if event and event.message else "")
            table.add_row(row.backend, row.label, f"[{colour}]{state}[/]", progress,
                          f"{elapsed:6.1f}s", message[:60])
        return table

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            key = "ERROR" if row.error else row.event.state.value if row.event else "UNKNOWN"
            counts[key] = counts.get(key, 0) + 1
        return counts


def _short(task_id: str) -> str:
    return task_id if len(task_id) <= 21 else task_id[:12] + "…" + task_id[-6:]


# -- running -------------------------------------------------------------------------------


async def _watch(
    streams: Sequence[tuple[str, str, Observable[TaskEvent[Any]]]],
    *,
    as_json: bool,
    out: TextIO,
    labels: dict[str, str] | None = None,
) -> int:
    """Watch every stream until all end; returns the exit code.

    ``labels`` shows some ids differently in the table (secret tokens shortened).
    """
    labels = {t: _short(label) for t, label in (labels or {}).items()}
    rows = [_Row(b, t, label=labels.get(t, _short(t))) for b, t, _ in streams]
    board = _Board(rows, as_json=as_json, out=out)
    failed = False

    async def one(backend: str, task_id: str, obs: Observable[TaskEvent[Any]]) -> None:
        nonlocal failed
        try:
            async for event in aiter(obs):
                board.update(event)
        except ReactiveTasksError as exc:
            failed = True
            board.rows[(backend, task_id)].error = f"{type(exc).__name__}: {exc}"
            if as_json:
                out.write(json.dumps({"backend": backend, "task_id": task_id,
                                      "error": type(exc).__name__, "message": str(exc)}) + "\n")
            board.refresh()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.5)
            board.refresh()

    with board:
        tick = asyncio.ensure_future(ticker())
        try:
            await asyncio.gather(*(one(b, t, o) for b, t, o in streams))
        finally:
            tick.cancel()
    counts = board.summary()
    if not as_json:
        print("\nsummary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=out)
    if failed:
        return EXIT_MONITORING_ERROR
    if set(counts) - {TaskState.COMPLETED.value}:
        return EXIT_TASK_FAILED
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    factory = BACKEND_FACTORIES.get(args.backend)
    if factory is None:
        print(f"reactive-tasks: unknown backend {args.backend!r}; "
              f"choose from {', '.join(sorted(BACKEND_FACTORIES))}", file=sys.stderr)
        return EXIT_MONITORING_ERROR
    args.policy = PollPolicy(interval=args.interval, timeout=args.timeout)
    try:
        backend, observe = factory(args)
        streams = [(backend.name, t, observe(t)) for t in args.task_ids]
        labels = {t: backend.display_id(t) for t in args.task_ids}
    except ReactiveTasksError as exc:
        print(f"reactive-tasks: {exc}", file=sys.stderr)
        return EXIT_MONITORING_ERROR

    async def run() -> int:
        async with backend:
            return await _watch(streams, as_json=args.json, out=sys.stdout, labels=labels)

    return asyncio.run(run())


def _cmd_relay(args: argparse.Namespace) -> int:
    names = [name for name in sorted(BACKEND_FACTORIES) if getattr(args, name)]
    if not names:
        print("reactive-tasks: relay needs at least one of "
              + ", ".join(f"--{n}" for n in sorted(BACKEND_FACTORIES)), file=sys.stderr)
        return EXIT_MONITORING_ERROR
    try:
        from .relay import Relay
    except ImportError:
        print("reactive-tasks: relay needs the relay extra: "
              "pip install 'reactive-tasks[relay]'", file=sys.stderr)
        return EXIT_MONITORING_ERROR
    args.policy = PollPolicy(interval=args.interval)
    try:
        backends = {name: BACKEND_FACTORIES[name](args)[0] for name in names}
        relay = Relay(args.redis, backends, lease=args.lease, name=args.name)
    except ReactiveTasksError as exc:
        print(f"reactive-tasks: {exc}", file=sys.stderr)
        return EXIT_MONITORING_ERROR

    async def run() -> int:
        try:
            await relay.run()  # Ctrl-C cancels it; it hands its tasks back on the way out
        finally:
            for backend in backends.values():
                await backend.aclose()
        return EXIT_OK

    print(f"relay {relay.name} serving {', '.join(names)}", file=sys.stderr, flush=True)
    return asyncio.run(run())


def _cmd_emulate(args: argparse.Namespace) -> int:
    from .emulator.__main__ import main as serve

    return serve(["--host", args.host, "--port", str(args.port)])


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(tasks=args.tasks, as_json=args.json, out=sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactive-tasks", description="Watch long-running tasks on remote task APIs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    watch = sub.add_parser("watch", help="watch tasks live until they end")
    watch.add_argument("backend", help="one of: " + ", ".join(sorted(BACKEND_FACTORIES)))
    watch.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    watch.add_argument("--base-url", help="API base URL (cloudcoin, greencloud, aparavi)")
    watch.add_argument("--root-url", help="Taskcluster root URL")
    watch.add_argument("--rpc-url", help="iExec: Ethereum JSON-RPC URL")
    watch.add_argument("--hub", help="iExec: PoCo hub address")
    watch.add_argument("--chain", help="iExec: a chain preset instead of --rpc-url/--hub")
    watch.add_argument("--deal-id", help="iExec: the task's deal id")
    watch.add_argument("--task-type", help="Aparavi: compute pool (cpu or gpu)")
    watch.add_argument("--token-env", metavar="NAME", help="env variable holding the token")
    watch.add_argument("--api-key-env", metavar="NAME", help="env variable holding the API key")
    watch.add_argument("--interval", type=float, default=2.0, help="poll interval (s)")
    watch.add_argument("--timeout", type=float, default=None, help="give up after (s)")
    watch.add_argument("--json", action="store_true", help="one JSON object per event")
    watch.set_defaults(run=_cmd_watch)

    relay = sub.add_parser("relay", help="share watches with other processes through Redis")
    relay.add_argument("--redis", required=True, metavar="URL", help="redis://host:port/db")
    for name in sorted(BACKEND_FACTORIES):
        relay.add_argument(f"--{name}", action="store_true", help=f"serve {name} tasks")
    for action in watch._actions:  # the same backend options as watch
        if action.option_strings and action.dest not in ("help", "json", "timeout"):
            relay._add_action(action)
    relay.add_argument("--lease", type=float, default=10.0, help="task lease (s)")
    relay.add_argument("--name", help="this relay's name (default: host:pid:random)")
    relay.set_defaults(run=_cmd_relay)

    demo = sub.add_parser("demo", help="watch scripted tasks on the built-in emulator")
    demo.add_argument("--tasks", type=int, default=36, help="how many tasks (default 36)")
    demo.add_argument("--json", action="store_true", help="one JSON object per event")
    demo.set_defaults(run=_cmd_demo)

    emulate = sub.add_parser("emulate", help="serve the emulators of all five APIs")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=DEFAULT_EMULATOR_PORT)
    emulate.set_defaults(run=_cmd_emulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reactive-tasks`` console script."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `reactive-tasks watch --json ... | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
