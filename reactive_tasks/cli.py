"""The ``reactive-tasks`` command: ``watch`` real tasks, run the ``demo``, serve ``emulate``,
share watches across processes with ``relay``.

Exit codes: 0 every task completed, 1 a task failed, was cancelled or timed out, 2 monitoring
failed (unreachable, refused credentials, not found, unreadable answers), 64 usage or
configuration error, 130 interrupted. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from reactivex import Observable

from . import __version__
from ._aio import aiter
from ._board import REDRAW_PERIOD, Board, Mode, RetryHandler, Row
from ._errors import ConfigurationError, InvalidTaskId, ReactiveTasksError
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
EXIT_USAGE = 64  # sysexits.h's EX_USAGE
DEFAULT_EMULATOR_PORT = 8765

EXIT_CODES_HELP = """\
exit codes:
  0    every task completed
  1    a task failed, was cancelled or timed out
  2    monitoring failed: backend unreachable, credentials refused, task not found,
       or an answer that could not be read
  64   usage or configuration error: bad flags, missing settings, invalid values
  130  interrupted (Ctrl-C)
"""


class UsageError(Exception):
    """Bad flags or settings: reported in one line, exit code 64."""


# -- building backends from arguments ------------------------------------------------------


def _secret(args: argparse.Namespace, option: str) -> str | None:
    """A secret read from the environment variable named by ``--<option>-env``."""
    name = getattr(args, option.replace("-", "_") + "_env", None)
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"environment variable {name} is not set")
    return value


Watcher = tuple[Backend[Any], Callable[[str], Observable[TaskEvent[Any]]]]


def _cloudcoin(args: argparse.Namespace) -> Watcher:
    backend = CloudCoinBackend(args.base_url or "http://localhost:8004", policy=args.policy)
    return backend, backend.observe


def _aparavi(args: argparse.Namespace) -> Watcher:
    key = _secret(args, "api-key") or _secret(args, "token")
    if key is None:
        raise UsageError("aparavi needs --api-key-env NAME")
    if not args.task_type:
        raise UsageError("aparavi needs --task-type cpu|gpu")
    backend = AparaviBackend(
        args.base_url or "https://eaas.aparavi.com", api_key=key, policy=args.policy
    )
    return backend, lambda token: backend.observe(token, task_type=args.task_type)


def _taskcluster(args: argparse.Namespace) -> Watcher:
    root_url = args.root_url or os.environ.get("TASKCLUSTER_ROOT_URL")
    if not root_url:
        raise UsageError("taskcluster needs --root-url (or TASKCLUSTER_ROOT_URL)")
    # The official client's environment variables; --token-env names another for the token.
    token = _secret(args, "token") or os.environ.get("TASKCLUSTER_ACCESS_TOKEN")
    client_id = os.environ.get("TASKCLUSTER_CLIENT_ID")
    credentials = None
    if token and client_id:
        credentials = {"clientId": client_id, "accessToken": token}
    elif token:
        raise UsageError("an access token needs TASKCLUSTER_CLIENT_ID too")
    backend = TaskclusterBackend(root_url, credentials=credentials, policy=args.policy)
    return backend, backend.observe


def _greencloud(args: argparse.Namespace) -> Watcher:
    token, key = _secret(args, "token"), _secret(args, "api-key")
    if (token is None) == (key is None):
        raise UsageError("greencloud needs one of --token-env or --api-key-env")
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
        raise UsageError("iexec needs --chain NAME, or --rpc-url and --hub")
    return backend, lambda task_id: backend.observe(task_id, deal_id=args.deal_id)


#: Backend name -> (backend, observe one id) from parsed arguments.
BACKEND_FACTORIES: dict[str, Callable[[argparse.Namespace], Watcher]] = {
    "aparavi": _aparavi,
    "cloudcoin": _cloudcoin,
    "greencloud": _greencloud,
    "iexec": _iexec,
    "taskcluster": _taskcluster,
}


# -- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a watch ended: the exit code and, unless all went well, one line saying why."""

    code: int
    why: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def _mode(as_json: bool, out: TextIO) -> Mode:
    if as_json:
        return "json"
    try:
        import rich  # noqa: F401
    except ImportError:  # the cli extra is not installed: plain lines instead
        return "lines"
    return "live" if out.isatty() else "lines"


async def _watch(
    streams: Sequence[tuple[str, str, Observable[TaskEvent[Any]]]],
    *,
    as_json: bool,
    out: TextIO,
    labels: dict[str, str] | None = None,
) -> Outcome:
    """Watch every stream until all end, showing poll retries on their rows.

    ``labels`` maps a task id to its display id (secret tokens shortened), which is also how the
    library's log records name it.
    """
    shown = labels or {}
    rows = [Row(b, t, label=shown.get(t, t)) for b, t, _ in streams]
    board = Board(rows, mode=_mode(as_json, out), out=out)
    for row in rows:
        board.alias(row, shown.get(row.task_id, row.task_id))
    errors: list[str] = []

    async def one(backend: str, task_id: str, obs: Observable[TaskEvent[Any]]) -> None:
        try:
            async for event in aiter(obs):
                board.update(event)
        except ReactiveTasksError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            board.fail(backend, task_id, exc)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(REDRAW_PERIOD)
            board.tick()

    library_log = logging.getLogger("reactive_tasks")
    handler = RetryHandler(board)
    saved = library_log.level, library_log.propagate
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    library_log.propagate = False  # the board shows retries; nothing else reaches stderr
    try:
        with board:
            tick = asyncio.ensure_future(ticker())
            try:
                await asyncio.gather(*(one(b, t, o) for b, t, o in streams))
            finally:
                tick.cancel()
    finally:
        library_log.removeHandler(handler)
        library_log.setLevel(saved[0])
        library_log.propagate = saved[1]
    counts = board.counts()
    if not as_json:
        print("\nsummary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=out)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Outcome(EXIT_MONITORING_ERROR, f"could not watch: {errors[0]}{more}", counts)
    unfinished = {k: n for k, n in counts.items() if k != TaskState.COMPLETED.value}
    if unfinished:
        text = ", ".join(f"{n} {k}" for k, n in sorted(unfinished.items()))
        total = sum(unfinished.values())
        return Outcome(EXIT_TASK_FAILED,
                       f"{total} of {len(rows)} tasks did not complete: {text}", counts)
    return Outcome(EXIT_OK, "", counts)


def _policy(args: argparse.Namespace) -> PollPolicy:
    try:
        return PollPolicy(
            interval=args.interval, max_interval=max(30.0, args.interval),
            timeout=args.timeout, retry_budget=args.retry_budget,
            request_timeout=args.request_timeout,
        )
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _address(text: str) -> tuple[str, int]:
    """``--web``'s [HOST:]PORT (an IPv6 host in brackets); the host defaults to loopback."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {text!r}")
    return host, int(port)


def _open_web(address: tuple[str, int]) -> Any:
    """The dashboard's socket, bound before anything is polled (so a taken port fails fast)."""
    try:
        from .web._serve import bind
    except ImportError:
        raise UsageError("--web needs the web extra: pip install 'reactive-tasks[web]'") from None
    try:
        return bind(*address)
    except OSError as exc:
        raise UsageError(f"cannot serve the dashboard on {address[0]}:{address[1]}: "
                         f"{exc.strerror or exc}") from None


def _cmd_watch(args: argparse.Namespace) -> int:
    factory = BACKEND_FACTORIES.get(args.backend)
    if factory is None:
        raise UsageError(f"unknown backend {args.backend!r}; "
                         f"choose from {', '.join(sorted(BACKEND_FACTORIES))}")
    args.policy = _policy(args)
    try:
        backend, observe = factory(args)
        ids = [backend.validate_task_id(t) for t in args.task_ids]
        streams = [(backend.name, t, observe(t)) for t in ids]
        labels = {t: backend.display_id(t) for t in ids}
    except (InvalidTaskId, ConfigurationError) as exc:
        raise UsageError(str(exc)) from None

    sock = _open_web(args.web) if args.web else None
    ended: list[Outcome] = []

    async def run() -> Outcome:
        async with backend:
            if sock is None:
                return await _watch(streams, as_json=args.json, out=sys.stdout, labels=labels)
            from .web._serve import serve_dashboard

            async with serve_dashboard(streams, sock) as shared:
                host, port = sock.getsockname()[:2]
                host = f"[{host}]" if ":" in host else host
                print(f"reactive-tasks: dashboard at http://{host}:{port}/", file=sys.stderr)
                ended.append(await _watch(shared, as_json=args.json, out=sys.stdout,
                                          labels=labels))
                print("reactive-tasks: every task has ended; the dashboard stays up until "
                      "Ctrl-C", file=sys.stderr)
                await asyncio.Event().wait()  # until Ctrl-C
            return ended[0]

    try:
        outcome = asyncio.run(run())
    except KeyboardInterrupt:
        if not ended:
            raise
        outcome = ended[0]  # Ctrl-C after the end: the code the outcome earned
    if outcome.why:
        print(f"reactive-tasks: {outcome.why}", file=sys.stderr)
    return outcome.code


def _cmd_relay(args: argparse.Namespace) -> int:
    names = [name for name in sorted(BACKEND_FACTORIES) if getattr(args, name)]
    if not names:
        raise UsageError("relay needs at least one of "
                         + ", ".join(f"--{n}" for n in sorted(BACKEND_FACTORIES)))
    try:
        from .relay import Relay
    except ImportError:
        raise UsageError("relay needs the relay extra: pip install 'reactive-tasks[relay]'") \
            from None
    args.timeout = None  # a relay watches until each task ends
    args.policy = _policy(args)
    try:
        backends = {name: BACKEND_FACTORIES[name](args)[0] for name in names}
        relay = Relay(args.redis, backends, lease=args.lease, name=args.name)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None

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

    pulse = ["--pulse", args.pulse] if args.pulse else []
    return serve(["--host", args.host, "--port", str(args.port), *pulse])


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if args.tasks < 1:
        raise UsageError("--tasks must be at least 1")
    return run_demo(
        _watch, tasks=args.tasks, as_json=args.json, out=sys.stdout, err=sys.stderr,
        monitoring_error=EXIT_MONITORING_ERROR,
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reactive-tasks", description="Watch long-running tasks on remote task APIs.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reactive-tasks {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    watch = sub.add_parser(
        "watch", help="watch tasks live until they end", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    watch.add_argument("--retry-budget", type=int, default=10, metavar="N",
                       help="consecutive failed polls of a task before giving up (default 10)")
    watch.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="timeout of one HTTP request (default 10)")
    watch.add_argument("--json", action="store_true", help="one JSON object per event")
    watch.add_argument("--web", type=_address, metavar="[HOST:]PORT",
                       help="also serve a live dashboard page there; it stays up after the "
                       "end until Ctrl-C (needs the web extra)")
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

    demo = sub.add_parser(
        "demo", help="watch scripted tasks on the built-in emulator",
        epilog="exits 0 when every task was watched to its end (some fail on purpose), "
        "2 on a monitoring error, 130 when interrupted",
    )
    demo.add_argument("--tasks", type=int, default=36, help="how many tasks (default 36)")
    demo.add_argument("--json", action="store_true", help="one JSON object per event")
    demo.set_defaults(run=_cmd_demo)

    emulate = sub.add_parser("emulate", help="serve the emulators of all five APIs")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=DEFAULT_EMULATOR_PORT)
    emulate.add_argument(
        "--pulse", metavar="AMQP_URL",
        help="publish Taskcluster's Pulse messages to this broker (amqp://user:pass@host:port/)",
    )
    emulate.set_defaults(run=_cmd_emulate)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as ``UsageError`` (exit 64) instead of its exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reactive-tasks`` console script; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
        code: int = args.run(args)
    except UsageError as exc:
        print(f"reactive-tasks: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("reactive-tasks: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `reactive-tasks watch --json ... | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ReactiveTasksError as exc:
        print(f"reactive-tasks: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_MONITORING_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
